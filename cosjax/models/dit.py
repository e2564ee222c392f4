"""The Wan DiT in Flax (linen), one code path for Wan2.1 T2V, Wan2.2 T2V/I2V-A14B and TI2V-5B.

Layout at the public boundary is the PyTorch references' ([B, C, T, H, W]); inside, tokens are
[B, L, D] with token index (f * H' + h) * W' + w. Blocks are stacked on a leading layer axis and run
by one `nn.scan`, so compile time does not grow with depth.

Precision follows the official runtime: matmuls run in `dtype` (bfloat16 or float32), the residual
stream, every norm, the time embedding, the modulation and the head run in float32.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from cosjax.configs import DiTConfig
from cosjax.models.attention import apply_rope, attention, rope_tables
from cosjax.parallel import axis_size, constrain
from cosjax.plan import EMPTY_LAYER_PLAN, LayerPlan

Dtype = jnp.dtype


def _dense(features: int, dtype: Dtype, param_dtype: Dtype, name: str) -> nn.Dense:
    precision = jax.lax.Precision.HIGHEST if dtype == jnp.float32 else None
    return nn.Dense(features, dtype=dtype, param_dtype=param_dtype, precision=precision, name=name)


def layer_norm(x: jax.Array, eps: float) -> jax.Array:
    """Parameter-free LayerNorm over the last axis, computed in float32."""
    x = x.astype(jnp.float32)
    mean = x.mean(-1, keepdims=True)
    var = jnp.square(x - mean).mean(-1, keepdims=True)
    return (x - mean) * jax.lax.rsqrt(var + eps)


class AffineLayerNorm(nn.Module):
    """LayerNorm with scale and bias (the cross-attention pre-norm, official `norm3`), float32."""

    eps: float
    param_dtype: Dtype

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        d = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (d,), self.param_dtype)
        bias = self.param("bias", nn.initializers.zeros, (d,), self.param_dtype)
        return layer_norm(x, self.eps) * scale.astype(jnp.float32) + bias.astype(jnp.float32)


class RMSNorm(nn.Module):
    """RMSNorm over the full width: normalise in float32, cast back to x's dtype, times weight."""

    eps: float
    param_dtype: Dtype

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        scale = self.param("scale", nn.initializers.ones, (x.shape[-1],), self.param_dtype)
        xf = x.astype(jnp.float32)
        normed = xf * jax.lax.rsqrt(jnp.square(xf).mean(-1, keepdims=True) + self.eps)
        return normed.astype(x.dtype) * scale.astype(x.dtype)


class Attention(nn.Module):
    """Self- (with RoPE) or cross-attention with full-width q/k RMSNorm.

    Inputs x [B, Lq, D] and source [B, Lk, D] in the compute dtype; rope = (cos, sin) float32
    [Lq, d/2] for self-attention, None for cross-attention; kv_len int32 [B] masks padded keys of
    self-attention (None: no padding). Returns [B, Lq, D] in the compute dtype.

    Under a mesh with a `context` axis the token sequence arrives sharded; self-attention is computed
    with heads sharded instead (the constraints make GSPMD insert Ulysses-style all-to-alls), so each
    device holds all tokens of its heads only while attending.
    """

    config: DiTConfig
    dtype: Dtype
    param_dtype: Dtype
    backend: str | None

    @nn.compact
    def __call__(self, x, source, rope=None, kv_len=None):
        cfg, dt, pdt = self.config, self.dtype, self.param_dtype
        q = RMSNorm(cfg.eps, pdt, name="norm_q")(_dense(cfg.dim, dt, pdt, "q")(x))
        k = RMSNorm(cfg.eps, pdt, name="norm_k")(_dense(cfg.dim, dt, pdt, "k")(source))
        v = _dense(cfg.dim, dt, pdt, "v")(source)
        split = lambda a: a.reshape(*a.shape[:2], cfg.num_heads, cfg.head_dim)  # noqa: E731
        q, k, v = split(q), split(k), split(v)
        if rope is not None:  # self-attention: all tokens, heads sharded over context x tensor
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
            q, k, v = (constrain(a, "data", None, ("context", "tensor"), None) for a in (q, k, v))
        else:  # cross-attention: local queries against the whole text
            q = constrain(q, "data", "context", "tensor", None)
            k, v = (constrain(a, "data", None, "tensor", None) for a in (k, v))
        out = attention(q, k, v, kv_len=kv_len, backend=self.backend)
        out = constrain(out, "data", "context", "tensor", None)
        return _dense(cfg.dim, dt, pdt, "o")(out.reshape(*x.shape[:2], cfg.dim))


class Block(nn.Module):
    """One Wan transformer block, written as a scan body over the stacked layer axis.

    Args (of __call__):
      carry: (x, state): x the float32 [B, L, D] residual stream, state the plan's capture state.
      layer: int32 scalar, this block's index (the scanned input).
      e0: float32 [B, 1 or L, 6, D] time modulation (1 when every token shares a timestep).
      context: [B, text_len, D] embedded text in the compute dtype.
      rope: (cos, sin) float32 [L, head_dim/2].
      kv_len: int32 [B] number of real tokens (keys beyond are padding), or None.
      plan: the intervention plan, applied after the block.

    Returns:
      ((x, state), ys): the new carry and the plan's per-layer outputs.
    """

    config: DiTConfig
    dtype: Dtype
    param_dtype: Dtype
    backend: str | None

    @nn.compact
    def __call__(self, carry, layer, e0, context, rope, kv_len, plan: LayerPlan):
        cfg, dt, pdt = self.config, self.dtype, self.param_dtype
        x, state = carry
        x = constrain(x, "data", "context", None)
        modulation = self.param(
            "modulation", nn.initializers.normal(1.0 / math.sqrt(cfg.dim)), (6, cfg.dim), pdt
        )
        m = modulation.astype(jnp.float32) + e0  # [B, 1|L, 6, D]
        shift, scale, gate, c_shift, c_scale, c_gate = (m[:, :, i] for i in range(6))

        h = (layer_norm(x, cfg.eps) * (1 + scale) + shift).astype(dt)
        y = Attention(cfg, dt, pdt, self.backend, name="self_attn")(h, h, rope, kv_len)
        x = x + y.astype(jnp.float32) * gate

        h = AffineLayerNorm(cfg.eps, pdt, name="cross_norm")(x).astype(dt)
        x = x + Attention(cfg, dt, pdt, self.backend, name="cross_attn")(h, context).astype(jnp.float32)

        h = (layer_norm(x, cfg.eps) * (1 + c_scale) + c_shift).astype(dt)
        h = nn.gelu(_dense(cfg.ffn_dim, dt, pdt, "fc1")(h), approximate=True)
        y = _dense(cfg.dim, dt, pdt, "fc2")(h)
        x = x + y.astype(jnp.float32) * c_gate
        x, state, ys = plan.after_block(layer, x, state)
        return (x, state), ys


def _pad_tokens(x: jax.Array, n: int) -> jax.Array:
    """Zero-pads axis 1 (tokens) of [B, L, ...] by n."""
    return x if n == 0 else jnp.pad(x, ((0, 0), (0, n)) + ((0, 0),) * (x.ndim - 2))


def timestep_embedding(t: jax.Array, dim: int) -> jax.Array:
    """Sinusoidal embedding, (cos, sin) order, float32: [...] -> [..., dim].

    Frequencies exp(-ln(10000) i / (dim/2)) as Diffusers computes them in float32 (the official
    code uses float64; at t <= 1000 the two differ by float32 rounding of the angle).
    """
    half = dim // 2
    freqs = jnp.exp(-math.log(10000.0) * jnp.arange(half, dtype=jnp.float32) / half)
    angle = t.astype(jnp.float32)[..., None] * freqs
    return jnp.concatenate([jnp.cos(angle), jnp.sin(angle)], axis=-1)


def patchify(x: jax.Array, patch: tuple[int, int, int]) -> jax.Array:
    """[B, C, T, H, W] -> [B, L, C*pt*ph*pw] tokens, feature order (c, pt, ph, pw), c slowest."""
    b, c, t, h, w = x.shape
    pt, ph, pw = patch
    x = x.reshape(b, c, t // pt, pt, h // ph, ph, w // pw, pw)
    x = x.transpose(0, 2, 4, 6, 1, 3, 5, 7)
    return x.reshape(b, (t // pt) * (h // ph) * (w // pw), c * pt * ph * pw)


def unpatchify(x: jax.Array, grid: tuple[int, int, int], patch: tuple[int, int, int]) -> jax.Array:
    """[B, L, pt*ph*pw*C] (channel fastest) -> [B, C, F*pt, H*ph, W*pw]."""
    b = x.shape[0]
    f, h, w = grid
    pt, ph, pw = patch
    x = x.reshape(b, f, h, w, pt, ph, pw, -1)
    x = x.transpose(0, 7, 1, 4, 2, 5, 3, 6)
    return x.reshape(b, x.shape[1], f * pt, h * ph, w * pw)


class WanDiT(nn.Module):
    """The Wan diffusion transformer.

    Attributes:
      config: the architecture.
      dtype: compute dtype of the matmuls (float32 or bfloat16).
      param_dtype: dtype the parameters are created in by `init`.
      attention_backend: name of an attention backend (None: chosen by platform).
    """

    config: DiTConfig
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    attention_backend: str | None = None

    def check_inputs(self, x, t, context, y) -> tuple[int, int, int]:
        """Validates shapes before tracing further; returns the patch grid (F', H', W')."""
        cfg = self.config
        if x.ndim != 5:
            raise ValueError(f"x must be [B, C, T, H, W], got shape {tuple(x.shape)}")
        b, c, tt, h, w = x.shape
        if cfg.model_type == "i2v" and y is None:
            raise ValueError("an i2v model needs the conditioning input y [B, 20, T, H, W]")
        if y is not None:
            if y.ndim != 5 or y.shape[0] != b or y.shape[2:] != x.shape[2:]:
                raise ValueError(
                    f"y must be [B, C_y, T, H, W] matching x {tuple(x.shape)}, got {tuple(y.shape)}"
                )
            c += y.shape[1]
        if c != cfg.in_dim:
            raise ValueError(f"the model takes {cfg.in_dim} input channels (x plus y), got {c}")
        pt, ph, pw = cfg.patch_size
        if tt % pt or h % ph or w % pw:
            raise ValueError(
                f"latent grid (T, H, W) = {(tt, h, w)} is not divisible by the patch size {cfg.patch_size}"
            )
        grid = (tt // pt, h // ph, w // pw)
        num_tokens = int(np.prod(grid))
        if t.shape not in ((b,), (b, num_tokens)):
            raise ValueError(
                f"t must be [B] = [{b}] or per-token [B, L] = [{b}, {num_tokens}], got {tuple(t.shape)}"
            )
        if context.ndim != 3 or context.shape[0] != b or context.shape[2] != cfg.text_dim:
            raise ValueError(
                f"context must be [B, L_txt, {cfg.text_dim}] with B = {b}, got {tuple(context.shape)}"
            )
        if context.shape[1] > cfg.text_len:
            raise ValueError(f"context has {context.shape[1]} tokens; the model takes at most {cfg.text_len}")
        heads_split = axis_size("context") * axis_size("tensor")
        if axis_size("context") > 1 and cfg.num_heads % heads_split:
            raise ValueError(
                f"context parallelism needs num_heads ({cfg.num_heads}) divisible by context x tensor "
                f"({heads_split}) mesh axes"
            )
        return grid

    @nn.compact
    def __call__(self, x, t, context, y=None, plan: LayerPlan | None = None):
        """Predicts the flow velocity.

        Args:
          x: [B, C, T, H, W] noisy latents (any float dtype).
          t: [B] timesteps in [0, 1000], or [B, L] per-token timesteps (TI2V), L = F'*H'*W'.
          context: [B, L_txt, text_dim] text embeddings, L_txt <= text_len; zero-padded to text_len
            inside (the padded rows are embedded and attended to, as in the official model).
          y: [B, C_y, T, H, W] conditioning concatenated after x on channels (I2V: 4 mask + 16
            image-latent channels), or None.
          plan: the per-step intervention plan (`cosjax.plan.LayerPlan`); None means none.

        Returns:
          v: float32 [B, out_dim, T, H, W] when plan is None, else (v, (ys, state)) where ys are the
          plan's per-layer outputs stacked on a leading layer axis and state its final capture
          state (see `LayerPlan`).
        """
        cfg, dt, pdt = self.config, self.dtype, self.param_dtype
        grid = self.check_inputs(x, t, context, y)
        if y is not None:
            x = jnp.concatenate([x, y.astype(x.dtype)], axis=1)

        # Under context parallelism the sequence is padded to a multiple of the context axis; padded
        # tokens are never attended to as keys and are dropped before unpatchify.
        num_tokens = int(np.prod(grid))
        pad_tokens = -num_tokens % axis_size("context")
        tokens = _pad_tokens(patchify(x.astype(dt), cfg.patch_size), pad_tokens)
        h = _dense(cfg.dim, dt, pdt, "patch_embedding")(tokens).astype(jnp.float32)
        h = constrain(h, "data", "context", None)
        if t.ndim == 2:
            t = jnp.pad(t, ((0, 0), (0, pad_tokens)), mode="edge")

        t_emb = timestep_embedding(t if t.ndim == 2 else t[:, None], cfg.freq_dim)  # [B, 1|L, F]
        e = _dense(cfg.dim, jnp.float32, pdt, "time_embedding_1")(t_emb)
        e = _dense(cfg.dim, jnp.float32, pdt, "time_embedding_2")(nn.silu(e))  # [B, 1|L, D]
        e0 = _dense(6 * cfg.dim, jnp.float32, pdt, "time_projection")(nn.silu(e))
        # keep the modulation whole along (6, D): the projection's output sharding would otherwise
        # split the 6 chunks across devices and force a rematerialisation per block
        tokens_axis = "context" if t.ndim == 2 else None
        e0 = constrain(e0.reshape(*e0.shape[:2], 6, cfg.dim), "data", tokens_axis, None, None)
        e = constrain(e, "data", tokens_axis, None)

        pad = cfg.text_len - context.shape[1]
        context = jnp.pad(context.astype(dt), ((0, 0), (0, pad), (0, 0)))
        context = _dense(cfg.dim, dt, pdt, "text_embedding_1")(context)
        context = _dense(cfg.dim, dt, pdt, "text_embedding_2")(nn.gelu(context, approximate=True))

        cos, sin = rope_tables(grid, cfg.rope_split, cfg.rope_theta)
        rope = (
            jnp.pad(cos, ((0, pad_tokens), (0, 0)), constant_values=1.0),
            _pad_tokens(sin[None], pad_tokens)[0],
        )
        kv_len = jnp.full((x.shape[0],), num_tokens, jnp.int32) if pad_tokens else None
        blocks = nn.scan(
            Block,
            variable_axes={"params": 0},
            split_rngs={"params": True},
            in_axes=(0, nn.broadcast, nn.broadcast, nn.broadcast, nn.broadcast, nn.broadcast),
            length=cfg.num_layers,
        )(cfg, dt, pdt, self.attention_backend, name="blocks")
        layers = jnp.arange(cfg.num_layers, dtype=jnp.int32)
        layer_plan = (EMPTY_LAYER_PLAN if plan is None else plan).pad_tokens(pad_tokens)
        (h, state), ys = blocks((h, layer_plan.init_state(h)), layers, e0, context, rope, kv_len, layer_plan)
        ys, state = layer_plan.trim_tokens(ys, state, num_tokens)

        head_mod = self.param(
            "head_modulation", nn.initializers.normal(1.0 / math.sqrt(cfg.dim)), (2, cfg.dim), pdt
        )
        m = head_mod.astype(jnp.float32) + e[:, :, None, :]  # [B, 1|L, 2, D]
        h = layer_norm(h, cfg.eps) * (1 + m[:, :, 1]) + m[:, :, 0]
        out = _dense(cfg.patch_volume * cfg.out_dim, jnp.float32, pdt, "head")(h)
        v = unpatchify(out[:, :num_tokens], grid, cfg.patch_size)
        return v if plan is None else (v, (ys, state))


def abstract_params(config: DiTConfig, dtype: Dtype = jnp.float32):
    """Shapes and dtypes of the parameter pytree, without allocating it (via `jax.eval_shape`)."""
    module = WanDiT(config, param_dtype=dtype)
    return jax.eval_shape(module.init, jax.random.key(0), *_dummy_inputs(config))["params"]


def init_params(config: DiTConfig, key: jax.Array, dtype: Dtype = jnp.float32):
    """Randomly initialised parameters (for tests, the demo and training from scratch)."""
    module = WanDiT(config, param_dtype=dtype)
    return jax.jit(module.init)(key, *_dummy_inputs(config))["params"]


def _dummy_inputs(config: DiTConfig):
    pt, ph, pw = config.patch_size
    c_x = config.in_dim if config.model_type != "i2v" else config.out_dim
    x = jnp.zeros((1, c_x, pt, ph, pw), jnp.float32)
    y = jnp.zeros((1, config.in_dim - c_x, pt, ph, pw)) if config.model_type == "i2v" else None
    return x, jnp.zeros((1,), jnp.float32), jnp.zeros((1, 1, config.text_dim), jnp.float32), y
