"""The Wan DiT in Flax (linen), one code path for Wan2.1 T2V, Wan2.2 T2V/I2V-A14B and TI2V-5B.

Layout at the public boundary is the PyTorch references' ([B, C, T, H, W]); inside, tokens are
[B, L, D] with token index (f * H' + h) * W' + w. Blocks are stacked on a leading layer axis and run
by one `nn.scan`, so compile time does not grow with depth.

Precision follows the official runtime: matmuls run in `dtype` (bfloat16 or float32), the residual
stream, every norm, the time embedding, the modulation and the head run in float32.

Fast path (the same function up to float summation order; `tests/test_fast_path.py` checks each):
  * text K/V once per run: `WanDiT.encode_text(params, context)` returns every layer's cross-attention
    keys and values (`TextKV`); `apply(..., text_kv=kv)` then skips the text embedding and the
    per-layer K/V projections. The sampler computes them once per expert before its step scan.
  * broadcast modulation: with one timestep per sample (T2V/I2V) the time embedding and the six
    modulation vectors stay [B, 1, 6, D] and broadcast over tokens; only per-token t (TI2V)
    materialises [B, L, 6, D].
  * optional fused QKV (`fuse_qkv=True`): one [D, 3, D] matmul for self-attention q, k, v, built from
    the unchanged q/k/v parameters. Off by default: on CPU it measured no gain (benchmarks/README.md).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from cosjax.configs import DiTConfig
from cosjax.geometry import padded_tokens
from cosjax.models.attention import apply_rope, attention, rope_tables
from cosjax.parallel import axis_size, constrain
from cosjax.plan import EMPTY_LAYER_PLAN, LayerPlan

Dtype = jnp.dtype


def _precision(dtype: Dtype):
    return jax.lax.Precision.HIGHEST if dtype == jnp.float32 else None


def _dense(features: int, dtype: Dtype, param_dtype: Dtype, name: str | None = None) -> nn.Dense:
    return nn.Dense(features, dtype=dtype, param_dtype=param_dtype, precision=_precision(dtype), name=name)


class TextKV(NamedTuple):
    """Cross-attention keys and values of the embedded text for every layer (the per-run cache).

    k (after the cross-attention `norm_k`) and v: [num_layers, B, text_len, num_heads, head_dim] in
    the compute dtype. For A14B in bfloat16 with CFG (B = 2): 2 x 40 x 2 x 512 x 5120 x 2 bytes
    = 0.84 GB per expert.
    """

    k: jax.Array
    v: jax.Array


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
    self-attention (None: no padding); kv = precomputed (k, v) [B, Lk, N, d] (from `project_kv`, the
    text K/V cache) replaces the projection of `source`. Returns [B, Lq, D] in the compute dtype.

    Under a mesh with a `context` axis the token sequence arrives sharded; self-attention is computed
    with heads sharded instead (the constraints make GSPMD insert Ulysses-style all-to-alls), so each
    device holds all tokens of its heads only while attending.
    """

    config: DiTConfig
    dtype: Dtype
    param_dtype: Dtype
    backend: str | None
    fuse_qkv: bool = False

    def setup(self):
        config, dt, pdt = self.config, self.dtype, self.param_dtype
        self.q, self.k, self.v, self.o = (_dense(config.dim, dt, pdt) for _ in range(4))
        self.norm_q = RMSNorm(config.eps, pdt)
        self.norm_k = RMSNorm(config.eps, pdt)

    def _heads(self, a: jax.Array) -> jax.Array:
        """[B, L, D] -> [B, L, N, d]."""
        return a.reshape(*a.shape[:2], self.config.num_heads, self.config.head_dim)

    def project_kv(self, source: jax.Array) -> tuple[jax.Array, jax.Array]:
        """source [B, Lk, D] -> (k, v), each [B, Lk, N, d] in the compute dtype (k RMS-normed, no RoPE)."""
        return self._heads(self.norm_k(self.k(source))), self._heads(self.v(source))

    def _fused_qkv(self, x: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        """q, k, v [B, L, N, d] of self-attention from one [D, 3, D] matmul (same math as q/k/v)."""
        p = self.variables["params"]
        kernel = jnp.stack([p[n]["kernel"] for n in ("q", "k", "v")], axis=1)  # [D, 3, D]
        bias = jnp.stack([p[n]["bias"] for n in ("q", "k", "v")])  # [3, D]
        x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
        y = jax.lax.dot_general(
            x, kernel, (((x.ndim - 1,), (0,)), ((), ())), precision=_precision(self.dtype)
        )
        y = y + bias  # [B, L, 3, D]
        q, k, v = y[:, :, 0], y[:, :, 1], y[:, :, 2]
        return self._heads(self.norm_q(q)), self._heads(self.norm_k(k)), self._heads(v)

    def __call__(self, x, source=None, rope=None, kv_len=None, kv=None):
        config = self.config
        if rope is not None and self.fuse_qkv and not self.is_initializing():
            q, k, v = self._fused_qkv(x)
        else:
            q = self._heads(self.norm_q(self.q(x)))
            k, v = self.project_kv(source) if kv is None else kv
        if rope is not None:  # self-attention: all tokens, heads sharded over context x tensor
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
            q, k, v = (constrain(a, "data", None, ("context", "tensor"), None) for a in (q, k, v))
        else:  # cross-attention: local queries against the whole text
            q = constrain(q, "data", "context", "tensor", None)
            k, v = (constrain(a, "data", None, "tensor", None) for a in (k, v))
        out = attention(q, k, v, kv_len=kv_len, backend=self.backend)
        out = constrain(out, "data", "context", "tensor", None)
        return self.o(out.reshape(*x.shape[:2], config.dim))


class Block(nn.Module):
    """One Wan transformer block, written as a scan body over the stacked layer axis.

    Args (of __call__):
      carry: (x, state): x the float32 [B, L, D] residual stream, state the plan's capture state.
      xs: (layer, kv), the scanned inputs: layer int32 scalar, this block's index; kv None, or this
        layer's cached cross-attention (k, v), each [B, text_len, N, d] (see `TextKV`).
      e0: [B, 1 or L, 6, D] time modulation (1 when every token shares a timestep), float32, or
        bfloat16 under `WanDiT.time_dtype`.
      context: [B, text_len, D] embedded text in the compute dtype (None when kv is given).
      rope: (cos, sin) float32 [L, head_dim/2].
      kv_len: int32 [B] number of real tokens (keys beyond are padding), or None.
      plan: the step's intervention view (`LayerPlan`): `branch_output` on each residual branch,
        `after_block` after the block.

    Returns:
      ((x, state), ys): the new carry and the plan's per-layer outputs.
    """

    config: DiTConfig
    dtype: Dtype
    param_dtype: Dtype
    backend: str | None
    fuse_qkv: bool = False

    @nn.compact
    def __call__(self, carry, xs, e0, context, rope, kv_len, plan: LayerPlan):
        config, dt, pdt = self.config, self.dtype, self.param_dtype
        x, state = carry
        layer, kv = xs
        x = constrain(x, "data", "context", None)
        modulation = self.param(
            "modulation", nn.initializers.normal(1.0 / math.sqrt(config.dim)), (6, config.dim), pdt
        )
        # summed in e0's dtype: float32 (official), or bfloat16 as DiffSynth under `time_dtype`
        m = (modulation.astype(e0.dtype) + e0).astype(jnp.float32)  # [B, 1|L, 6, D]
        shift, scale, gate, c_shift, c_scale, c_gate = (m[:, :, i] for i in range(6))

        h = (layer_norm(x, config.eps) * (1 + scale) + shift).astype(dt)
        y = Attention(config, dt, pdt, self.backend, self.fuse_qkv, name="self_attn")(h, h, rope, kv_len)
        y, state = plan.branch_output(layer, "self_attn", y, state)
        x = x + y.astype(jnp.float32) * gate

        h = AffineLayerNorm(config.eps, pdt, name="cross_norm")(x).astype(dt)
        cross = Attention(config, dt, pdt, self.backend, name="cross_attn")(h, context, kv=kv)
        cross, state = plan.branch_output(layer, "cross_attn", cross, state)
        x = x + cross.astype(jnp.float32)

        h = (layer_norm(x, config.eps) * (1 + c_scale) + c_shift).astype(dt)
        h = nn.gelu(_dense(config.ffn_dim, dt, pdt, "fc1")(h), approximate=True)
        y = _dense(config.dim, dt, pdt, "fc2")(h)
        y, state = plan.branch_output(layer, "ffn", y, state)
        x = x + y.astype(jnp.float32) * c_gate
        x, state, ys = plan.after_block(layer, x, state)
        return (x, state), ys


def _pad_tokens(x: jax.Array, n: int) -> jax.Array:
    """Zero-pads axis 1 (tokens) of [B, L, ...] by n."""
    return x if n == 0 else jnp.pad(x, ((0, 0), (0, n)) + ((0, 0),) * (x.ndim - 2))


def timestep_embedding(t: jax.Array, dim: int) -> jax.Array:
    """Sinusoidal embedding, (cos, sin) order, float32: [...] -> [..., dim], traced.

    Frequencies exp(-ln(10000) i / (dim/2)) and angles in float32, as Diffusers computes them; the
    official code (and DiffSynth) use float64, which `host_timestep_embedding` gives for the known
    timesteps of a schedule (the sampler feeds those as `t_freq`).
    """
    half = dim // 2
    freqs = jnp.exp(-math.log(10000.0) * jnp.arange(half, dtype=jnp.float32) / half)
    angle = t.astype(jnp.float32)[..., None] * freqs
    return jnp.concatenate([jnp.cos(angle), jnp.sin(angle)], axis=-1)


def host_timestep_embedding(t, dim: int) -> np.ndarray:
    """The official sinusoid computed on the host in float64 (`sinusoidal_embedding_1d`): angles
    t * 10000^(-i / (dim/2)), (cos, sin) order. t: array-like [...] -> float64 [..., dim] (cast it
    once, to the dtype the model takes)."""
    half = dim // 2
    angle = np.asarray(t, np.float64)[..., None] * np.power(
        10000.0, -np.arange(half, dtype=np.float64) / half
    )
    return np.concatenate([np.cos(angle), np.sin(angle)], axis=-1)


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


def embed_text(context: jax.Array, config: DiTConfig, dtype: Dtype, param_dtype: Dtype) -> jax.Array:
    """The text embedding MLP (call inside a compact module: it creates `text_embedding_1/2` there).

    context [B, L_txt, text_dim] (L_txt <= text_len, any float dtype) is zero-padded to text_len,
    cast to the compute dtype and mapped to [B, text_len, D] in the compute dtype.
    """
    pad = config.text_len - context.shape[1]
    context = jnp.pad(context.astype(dtype), ((0, 0), (0, pad), (0, 0)))
    context = _dense(config.dim, dtype, param_dtype, "text_embedding_1")(context)
    return _dense(config.dim, dtype, param_dtype, "text_embedding_2")(nn.gelu(context, approximate=True))


class _CrossKV(nn.Module):
    """One layer's cross-attention K/V of the embedded text (vmapped over the stacked layers)."""

    config: DiTConfig
    dtype: Dtype
    param_dtype: Dtype

    @nn.compact
    def __call__(self, context: jax.Array) -> tuple[jax.Array, jax.Array]:
        attn = Attention(self.config, self.dtype, self.param_dtype, None, name="cross_attn")
        return attn.project_kv(context)


class CrossAttentionKV(nn.Module):
    """The text side of a `WanDiT`: text embedding plus every layer's cross-attention K/V (the cache
    `WanDiT.encode_text` builds once per run; not the umT5 text encoder, which is `cosjax.text.TextEncoder`).

    The parameter names are those of `WanDiT` (`text_embedding_1/2`, `blocks/cross_attn/{k,v,norm_k}`),
    so `CrossAttentionKV(...).apply({"params": dit_params}, context)` reads the DiT's own weights. The layer
    axis is vmapped: one batched matmul per projection for all layers.
    """

    config: DiTConfig
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, context: jax.Array) -> TextKV:
        """context [B, L_txt, text_dim] -> TextKV, k and v [num_layers, B, text_len, N, d] (compute dtype)."""
        config = self.config
        embedded = embed_text(context, config, self.dtype, self.param_dtype)
        layers = nn.vmap(
            _CrossKV,
            variable_axes={"params": 0},
            split_rngs={"params": True},
            in_axes=None,
            out_axes=0,
            axis_size=config.num_layers,
        )(config, self.dtype, self.param_dtype, name="blocks")
        return TextKV(*layers(embedded))


class WanDiT(nn.Module):
    """The Wan diffusion transformer.

    Attributes:
      config: the architecture.
      dtype: compute dtype of the matmuls (float32 or bfloat16).
      param_dtype: dtype the parameters are created in by `init`.
      attention_backend: name of an attention backend (None: chosen by platform).
      fuse_qkv: compute self-attention q, k, v with one matmul (same parameters, same result up to
        float rounding; see the module docstring).
      time_dtype: dtype of the time path (sinusoid, time MLP, time projection and the modulation
        sums). None: float32, as the official runtime. bfloat16: as DiffSynth runs a bf16 model
        (every one of those rounded to bf16), for `SamplerSettings.rounding="diffsynth"`.
    """

    config: DiTConfig
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    attention_backend: str | None = None
    fuse_qkv: bool = False
    time_dtype: Dtype | None = None

    @nn.nowrap
    def encode_text(self, params, context: jax.Array) -> TextKV:
        """The per-run text cache: embedded text projected to every layer's cross-attention K/V.

        Args:
          params: this model's parameter tree (the "params" collection).
          context: [B, L_txt, text_dim] text embeddings (L_txt <= text_len; zero-padded inside as in
            `__call__`). For CFG pass the conditional and unconditional prompts as one batch.

        Returns:
          TextKV with k, v [num_layers, B, text_len, num_heads, head_dim] in the compute dtype, to pass
          as `apply(..., text_kv=...)` at every step instead of `context`.
        """
        if context.ndim != 3 or context.shape[2] != self.config.text_dim:
            raise ValueError(
                f"context must be [B, L_txt, {self.config.text_dim}], got {tuple(context.shape)}"
            )
        if context.shape[1] > self.config.text_len:
            raise ValueError(
                f"context has {context.shape[1]} tokens; the model takes at most {self.config.text_len}"
            )
        encoder = CrossAttentionKV(self.config, self.dtype, self.param_dtype)
        return encoder.apply({"params": params}, context)

    def check_inputs(self, x, t, context, y, text_kv=None) -> tuple[int, int, int]:
        """Validates shapes before tracing further; returns the patch grid (F', H', W')."""
        config = self.config
        if x.ndim != 5:
            raise ValueError(f"x must be [B, C, T, H, W], got shape {tuple(x.shape)}")
        b, c, tt, h, w = x.shape
        if config.model_type == "i2v" and y is None:
            raise ValueError("an i2v model needs the conditioning input y [B, 20, T, H, W]")
        if y is not None:
            if y.ndim != 5 or y.shape[0] != b or y.shape[2:] != x.shape[2:]:
                raise ValueError(
                    f"y must be [B, C_y, T, H, W] matching x {tuple(x.shape)}, got {tuple(y.shape)}"
                )
            c += y.shape[1]
        if c != config.in_dim:
            raise ValueError(f"the model takes {config.in_dim} input channels (x plus y), got {c}")
        pt, ph, pw = config.patch_size
        if tt % pt or h % ph or w % pw:
            raise ValueError(
                f"latent grid (T, H, W) = {(tt, h, w)} is not divisible by the patch size {config.patch_size}"
            )
        grid = (tt // pt, h // ph, w // pw)
        num_tokens = int(np.prod(grid))
        if t.shape not in ((b,), (b, num_tokens)):
            raise ValueError(
                f"t must be [B] = [{b}] or per-token [B, L] = [{b}, {num_tokens}], got {tuple(t.shape)}"
            )
        if text_kv is not None:
            want = (config.num_layers, b, config.text_len, config.num_heads, config.head_dim)
            if context is not None:
                raise ValueError("pass either context or text_kv (from encode_text), not both")
            if tuple(text_kv.k.shape) != want or tuple(text_kv.v.shape) != want:
                raise ValueError(
                    f"text_kv k and v must be [layers, B, text_len, heads, head_dim] = {want}, got "
                    f"{tuple(text_kv.k.shape)} and {tuple(text_kv.v.shape)}"
                )
        elif (
            context is None
            or context.ndim != 3
            or context.shape[0] != b
            or context.shape[2] != config.text_dim
        ):
            got = None if context is None else tuple(context.shape)
            raise ValueError(f"context must be [B, L_txt, {config.text_dim}] with B = {b}, got {got}")
        elif context.shape[1] > config.text_len:
            raise ValueError(
                f"context has {context.shape[1]} tokens; the model takes at most {config.text_len}"
            )
        heads_split = axis_size("context") * axis_size("tensor")
        if axis_size("context") > 1 and config.num_heads % heads_split:
            raise ValueError(
                f"context parallelism needs num_heads ({config.num_heads}) divisible by context x tensor "
                f"({heads_split}) mesh axes"
            )
        return grid

    @nn.compact
    def __call__(
        self,
        x,
        t,
        context,
        y=None,
        plan: LayerPlan | None = None,
        text_kv: TextKV | None = None,
        t_freq: jax.Array | None = None,
    ):
        """Predicts the flow velocity.

        Args:
          x: [B, C, T, H, W] noisy latents (any float dtype).
          t: [B] timesteps in [0, 1000], or [B, L] per-token timesteps (TI2V), L = F'*H'*W'.
          context: [B, L_txt, text_dim] text embeddings, L_txt <= text_len; zero-padded to text_len
            inside (the padded rows are embedded and attended to, as in the official model). None
            when `text_kv` is given.
          y: [B, C_y, T, H, W] conditioning concatenated after x on channels (I2V: 4 mask + 16
            image-latent channels), or None.
          plan: the per-step intervention view (`cosjax.plan.LayerPlan`, e.g. `Plan.at_step`);
            None means none.
          text_kv: the cross-attention K/V of the text from `encode_text` (computed once per run and
            reused at every step), or None to embed `context` here.
          t_freq: the sinusoid of t, float [B, freq_dim] or [B, L, freq_dim] (e.g. the float64
            `host_timestep_embedding` of a known schedule), or None to compute it here in float32.

        Returns:
          v: float32 [B, out_dim, T, H, W] when plan is None, else (v, (ys, state)) where ys are the
          plan's per-layer outputs stacked on a leading layer axis and state its final capture
          state (see `LayerPlan`).
        """
        config, dt, pdt = self.config, self.dtype, self.param_dtype
        grid = self.check_inputs(x, t, context, y, text_kv)
        if y is not None:
            x = jnp.concatenate([x, y.astype(x.dtype)], axis=1)

        # Under context parallelism the sequence is padded to a multiple of the context axis; padded
        # tokens are never attended to as keys and are dropped before unpatchify.
        num_tokens = int(np.prod(grid))
        pad_tokens = padded_tokens(num_tokens, axis_size("context")) - num_tokens
        tokens = _pad_tokens(patchify(x.astype(dt), config.patch_size), pad_tokens)
        h = _dense(config.dim, dt, pdt, "patch_embedding")(tokens).astype(jnp.float32)
        h = constrain(h, "data", "context", None)
        if t.ndim == 2:
            t = jnp.pad(t, ((0, 0), (0, pad_tokens)), mode="edge")
        if t_freq is None:
            t_freq = timestep_embedding(t, config.freq_dim)
        elif t_freq.ndim == 3:
            t_freq = jnp.pad(t_freq, ((0, 0), (0, pad_tokens), (0, 0)), mode="edge")
        if tuple(t_freq.shape) != (*t.shape, config.freq_dim):
            raise ValueError(
                f"t_freq must be [*t.shape, freq_dim], got {tuple(t_freq.shape)} for t {t.shape}"
            )

        # one timestep per sample: everything below stays [B, 1, ...] and broadcasts over tokens
        tdt = jnp.float32 if self.time_dtype is None else self.time_dtype
        t_emb = (t_freq if t.ndim == 2 else t_freq[:, None]).astype(tdt)  # [B, 1|L, F]
        e = _dense(config.dim, tdt, pdt, "time_embedding_1")(t_emb)
        e = _dense(config.dim, tdt, pdt, "time_embedding_2")(nn.silu(e))  # [B, 1|L, D]
        e0 = _dense(6 * config.dim, tdt, pdt, "time_projection")(nn.silu(e))
        # keep the modulation whole along (6, D): the projection's output sharding would otherwise
        # split the 6 chunks across devices and force a rematerialisation per block
        tokens_axis = "context" if t.ndim == 2 else None
        e0 = constrain(e0.reshape(*e0.shape[:2], 6, config.dim), "data", tokens_axis, None, None)
        e = constrain(e, "data", tokens_axis, None)

        if text_kv is None:
            context = embed_text(context, config, dt, pdt)
            kv = None
        else:
            context, kv = None, (text_kv.k.astype(dt), text_kv.v.astype(dt))

        cos, sin = rope_tables(grid, config.rope_split, config.rope_theta)
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
            length=config.num_layers,
        )(config, dt, pdt, self.attention_backend, self.fuse_qkv, name="blocks")
        layers = jnp.arange(config.num_layers, dtype=jnp.int32)
        layer_plan = (EMPTY_LAYER_PLAN if plan is None else plan).pad_tokens(pad_tokens)
        carry = (h, layer_plan.init_state(h))
        (h, state), ys = blocks(carry, (layers, kv), e0, context, rope, kv_len, layer_plan)
        ys, state = layer_plan.trim_tokens(ys, state, num_tokens)

        head_mod = self.param(
            "head_modulation", nn.initializers.normal(1.0 / math.sqrt(config.dim)), (2, config.dim), pdt
        )
        m = (head_mod.astype(e.dtype) + e[:, :, None, :]).astype(jnp.float32)  # [B, 1|L, 2, D]
        h = layer_norm(h, config.eps) * (1 + m[:, :, 1]) + m[:, :, 0]
        out = _dense(config.patch_volume * config.out_dim, jnp.float32, pdt, "head")(h)
        v = unpatchify(out[:, :num_tokens], grid, config.patch_size)
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
