"""The umT5 encoder (Wan's text encoder, `wan22.md` section 7) as pure JAX functions.

Parameters are a plain dict with the blocks stacked on a leading layer axis; `encode` runs them with
one `jax.lax.scan`, so compile time does not grow with depth. Tree (N layers, D = d_model,
I = num_heads * d_kv, F = d_ff, kernels stored [in, out]):

  token_embedding [V, D]
  blocks/norm1 [N, D]        blocks/q, k, v [N, D, I]    blocks/o [N, I, D]
  blocks/rel_bias [N, num_buckets, num_heads]             blocks/norm2 [N, D]
  blocks/gate [N, D, F] (GELU branch)   blocks/fc1 [N, D, F] (linear branch)   blocks/fc2 [N, F, D]
  norm [D]

Precision: matmuls and the residual stream run in the parameter dtype (as the official bf16 runtime
does); RMSNorm statistics, attention logits, position bias and softmax are float32. umT5 does not
scale the logits by 1/sqrt(d_kv) (the scale is folded into the trained weights), so logits reach
O(100) and keeping them in float32 matters more than in a scaled transformer.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

TEXT_LEN = 512


@dataclasses.dataclass(frozen=True)
class T5Config:
    """Architecture of a umT5 encoder.

    Attributes:
      vocab_size: rows of the token embedding.
      d_model: width of the residual stream.
      d_kv: width of one attention head.
      num_heads: attention heads (inner width num_heads * d_kv).
      d_ff: inner width of the gated feed-forward network.
      num_layers: encoder blocks.
      num_buckets: relative-position buckets (half per direction).
      max_distance: distances at or beyond this share the last bucket.
      eps: epsilon of every RMSNorm.
    """

    vocab_size: int
    d_model: int
    d_kv: int
    num_heads: int
    d_ff: int
    num_layers: int
    num_buckets: int = 32
    max_distance: int = 128
    eps: float = 1e-6

    @property
    def inner_dim(self) -> int:
        return self.num_heads * self.d_kv


UMT5_XXL = T5Config(vocab_size=256384, d_model=4096, d_kv=64, num_heads=64, d_ff=10240, num_layers=24)


def init_params(config: T5Config, key: jax.Array, dtype=jnp.float32) -> dict:
    """Random parameters (tests, demos): T5's initial scales, RMSNorm weights one."""
    c = config
    n, d, inner, f = c.num_layers, c.d_model, c.inner_dim, c.d_ff
    keys = iter(jax.random.split(key, 9))

    def normal(shape, std):
        return (std * jax.random.normal(next(keys), shape, jnp.float32)).astype(dtype)

    return {
        "token_embedding": normal((c.vocab_size, d), 1.0),
        "blocks": {
            "norm1": jnp.ones((n, d), dtype),
            "q": normal((n, d, inner), (d * c.d_kv) ** -0.5),
            "k": normal((n, d, inner), d**-0.5),
            "v": normal((n, d, inner), d**-0.5),
            "o": normal((n, inner, d), inner**-0.5),
            "rel_bias": normal((n, c.num_buckets, c.num_heads), d**-0.5),
            "norm2": jnp.ones((n, d), dtype),
            "gate": normal((n, d, f), d**-0.5),
            "fc1": normal((n, d, f), d**-0.5),
            "fc2": normal((n, f, d), f**-0.5),
        },
        "norm": jnp.ones((d,), dtype),
    }


def abstract_params(config: T5Config, dtype=jnp.float32) -> dict:
    """Shapes and dtypes of the parameter tree (`jax.ShapeDtypeStruct` leaves), nothing allocated."""
    return jax.eval_shape(functools.partial(init_params, config, dtype=dtype), jax.random.key(0))


def config_from_params(params: dict, max_distance: int = 128, eps: float = 1e-6) -> T5Config:
    """The architecture visible in the parameter shapes (max_distance and eps are not; umT5 values)."""
    blocks = params["blocks"]
    n, num_buckets, num_heads = blocks["rel_bias"].shape
    vocab_size, d_model = params["token_embedding"].shape
    return T5Config(
        vocab_size=vocab_size,
        d_model=d_model,
        d_kv=blocks["q"].shape[-1] // num_heads,
        num_heads=num_heads,
        d_ff=blocks["gate"].shape[-1],
        num_layers=n,
        num_buckets=num_buckets,
        max_distance=max_distance,
        eps=eps,
    )


def check_params(params: dict, config: T5Config) -> None:
    """Raises ValueError naming the first leaf whose shape does not fit `config`."""
    want = dict(jax.tree_util.tree_flatten_with_path(abstract_params(config))[0])
    got = dict(jax.tree_util.tree_flatten_with_path(params)[0])
    for path in sorted(want.keys() ^ got.keys(), key=jax.tree_util.keystr):
        state = "missing" if path in want else "unexpected"
        raise ValueError(f"parameter {jax.tree_util.keystr(path)} is {state}")
    for path, leaf in want.items():
        if tuple(got[path].shape) != leaf.shape:
            name = jax.tree_util.keystr(path)
            raise ValueError(f"parameter {name} has shape {tuple(got[path].shape)}, expected {leaf.shape}")


def relative_buckets(q_len: int, k_len: int, num_buckets: int, max_distance: int) -> np.ndarray:
    """Bidirectional T5 relative-position buckets, int32 [q_len, k_len] (host constant).

    rel = key - query; keys after the query use the upper half of the buckets. Within a half, the
    first half of the buckets are exact distances, the rest logarithmic up to max_distance. The log
    is taken in float32 like the references, so distances that land exactly on a bucket edge
    (16, 32, 64 for the umT5 numbers) truncate the same way.
    """
    rel = np.arange(k_len)[None, :] - np.arange(q_len)[:, None]
    half = num_buckets // 2
    exact = half // 2
    dist = np.abs(rel)
    scaled = np.log(np.maximum(dist, 1).astype(np.float32) / np.float32(exact))
    scaled = scaled / np.float32(math.log(max_distance / exact)) * np.float32(half - exact)
    large = np.minimum(exact + scaled.astype(np.int64), half - 1)
    return (np.where(rel > 0, half, 0) + np.where(dist < exact, dist, large)).astype(np.int32)


def rms_norm(x: jax.Array, weight: jax.Array, eps: float) -> jax.Array:
    """T5 LayerNorm: x * rsqrt(mean(x^2) + eps) in float32, cast to weight's dtype, times weight."""
    xf = x.astype(jnp.float32)
    normed = xf * jax.lax.rsqrt(jnp.mean(jnp.square(xf), axis=-1, keepdims=True) + eps)
    return normed.astype(weight.dtype) * weight


def _precision(dtype) -> jax.lax.Precision | None:
    return jax.lax.Precision.HIGHEST if dtype == jnp.float32 else None


def _linear(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """x [..., in] @ kernel [in, out], in the kernel's dtype."""
    return jnp.matmul(x.astype(kernel.dtype), kernel, precision=_precision(kernel.dtype))


def _attention(h: jax.Array, layer: dict, key_mask: jax.Array, buckets: jax.Array) -> jax.Array:
    """Self-attention with relative position bias and no logit scaling.

    Args:
      h: normalised input [B, L, D] in the parameter dtype.
      layer: one block's parameters (a slice of the stacked tree).
      key_mask: bool [B, L], False at padded tokens (never attended to).
      buckets: int32 [L, L] relative-position buckets.

    Returns:
      [B, L, D] in the parameter dtype.
    """
    b, seq, _ = h.shape
    num_heads = layer["rel_bias"].shape[-1]
    q, k, v = (_linear(h, layer[n]).reshape(b, seq, num_heads, -1) for n in ("q", "k", "v"))
    precision = _precision(q.dtype)
    logits = jnp.einsum("bqhd,bkhd->bhqk", q, k, precision=precision, preferred_element_type=jnp.float32)
    bias = layer["rel_bias"].astype(jnp.float32)[buckets]  # [L, L, H]
    logits = logits + jnp.transpose(bias, (2, 0, 1))[None]
    # the most negative finite value, not -inf: a row with no valid key stays finite (uniform)
    logits = jnp.where(key_mask[:, None, None, :], logits, jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
    out = jnp.einsum("bhqk,bkhd->bqhd", probs, v, precision=precision)
    return _linear(out.reshape(b, seq, -1), layer["o"])


def _block(x: jax.Array, layer: dict, key_mask: jax.Array, buckets: jax.Array, eps: float) -> jax.Array:
    """One encoder block (scan body): pre-norm attention, then pre-norm gated GELU-tanh FFN."""
    x = x + _attention(rms_norm(x, layer["norm1"], eps), layer, key_mask, buckets)
    h = rms_norm(x, layer["norm2"], eps)
    gated = jax.nn.gelu(_linear(h, layer["gate"]), approximate=True) * _linear(h, layer["fc1"])
    return x + _linear(gated, layer["fc2"])


@functools.partial(jax.jit, static_argnames=("config",))
def encode(params: dict, ids: jax.Array, mask: jax.Array, config: T5Config | None = None) -> jax.Array:
    """Runs the encoder.

    Args:
      params: the parameter tree (float32, bfloat16 or float16 leaves; all one dtype).
      ids: int32 [B, L] token ids.
      mask: [B, L] attention mask (nonzero at real tokens); padded keys are never attended to.
      config: the architecture; None reads it from the parameter shapes (umT5 max_distance, eps).

    Returns:
      float32 [B, L, d_model] last hidden states (padded positions hold values too; see
      `pad_to_text_len`).
    """
    config = config_from_params(params) if config is None else config
    check_params(params, config)
    seq = ids.shape[1]
    buckets = jnp.asarray(relative_buckets(seq, seq, config.num_buckets, config.max_distance))
    key_mask = mask != 0
    x = params["token_embedding"][ids]

    def body(x, layer):
        return _block(x, layer, key_mask, buckets, config.eps), None

    x, _ = jax.lax.scan(body, x, params["blocks"])
    return rms_norm(x, params["norm"], config.eps).astype(jnp.float32)


def pad_to_text_len(hidden: jax.Array, mask: jax.Array, text_len: int = TEXT_LEN) -> jax.Array:
    """Wan's context: each row trimmed to its true length, then zero-padded to `text_len` rows.

    The true length is the count of nonzero mask entries (prompt tokens including EOS); rows at or
    beyond it are zeroed, as the official pipeline's `u[:v]` followed by zero padding does.

    Args:
      hidden: [B, L, D] encoder output, L <= text_len.
      mask: [B, L] attention mask.
      text_len: rows of the result.

    Returns:
      [B, text_len, D] in hidden's dtype.
    """
    b, seq, _ = hidden.shape
    if seq > text_len:
        raise ValueError(f"{seq} tokens do not fit text_len {text_len}")
    lengths = jnp.sum(mask != 0, axis=-1)
    keep = jnp.arange(seq)[None, :] < lengths[:, None]
    hidden = jnp.where(keep[..., None], hidden, jnp.zeros((), hidden.dtype))
    return jnp.pad(hidden, ((0, 0), (0, text_len - seq), (0, 0)))


@functools.partial(jax.jit, static_argnames=("config", "text_len"))
def encode_padded(
    params: dict, ids: jax.Array, mask: jax.Array, config: T5Config | None = None, text_len: int = TEXT_LEN
) -> jax.Array:
    """`encode` then `pad_to_text_len`: float32 [B, text_len, d_model], the DiT's context input."""
    return pad_to_text_len(encode(params, ids, mask, config), mask, text_len)
