"""Rotary position embedding and the attention seam of the Wan DiT.

Every attention call in the model goes through `attention(...)`; the backend is picked by platform
(Pallas splash on TPU, cuDNN flash on GPU, XLA elsewhere) and can be overridden by name. Layout
inside the model is token-major: q, k, v are [B, L, N, d]; `kv_len` masks padded keys.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np


def rope_tables(
    grid: tuple[int, int, int], split: tuple[int, int, int], theta: float = 10000.0
) -> tuple[jax.Array, jax.Array]:
    """Cos/sin tables of Wan's 3-axis interleaved rotary embedding.

    The per-axis angles are computed on the host in float64 (as the references do) and embedded as
    small constants ([size_axis, dim_axis / 2] each); the [L, head_dim / 2] tables are broadcast from
    them inside the program, so a 75k-token grid adds no large constant to the compiled HLO.

    Args:
      grid: (F, H, W) patch grid; token index = (f * H + h) * W + w.
      split: real dims of the head vector rotated by f, h and w position (sums to head_dim).
      theta: RoPE base.

    Returns:
      (cos, sin), each float32 [F*H*W, head_dim // 2]: one angle per complex pair (x[2k], x[2k+1]).
    """
    cos_parts, sin_parts = [], []
    for axis, (size, dim) in enumerate(zip(grid, split, strict=True)):
        freqs = theta ** (-np.arange(0, dim, 2, dtype=np.float64) / dim)  # [dim/2]
        angle = np.outer(np.arange(size, dtype=np.float64), freqs)  # [size, dim/2]
        shape = [1, 1, 1, dim // 2]
        shape[axis] = size
        for parts, table in ((cos_parts, np.cos(angle)), (sin_parts, np.sin(angle))):
            parts.append(jnp.broadcast_to(table.astype(np.float32).reshape(shape), (*grid, dim // 2)))
    half = sum(split) // 2
    return (
        jnp.concatenate(cos_parts, axis=-1).reshape(-1, half),
        jnp.concatenate(sin_parts, axis=-1).reshape(-1, half),
    )


def apply_rope(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
    """Rotates interleaved pairs (x[2k], x[2k+1]) of every head by the token's angles.

    Args:
      x: [B, L, N, d] queries or keys, any float dtype.
      cos, sin: float32 [L, d // 2] from `rope_tables`.

    Returns:
      [B, L, N, d] in x's dtype; the rotation itself is computed in float32.
    """
    b, seq, n, d = x.shape
    pairs = x.astype(jnp.float32).reshape(b, seq, n, d // 2, 2)
    re, im = pairs[..., 0], pairs[..., 1]
    c, s = cos[None, :, None, :], sin[None, :, None, :]
    out = jnp.stack([re * c - im * s, re * s + im * c], axis=-1)
    return out.reshape(b, seq, n, d).astype(x.dtype)


def xla_attention(q: jax.Array, k: jax.Array, v: jax.Array, kv_len: jax.Array | None = None) -> jax.Array:
    """Plain softmax attention: logits and softmax in float32, scale 1/sqrt(d).

    Args:
      q: [B, Lq, N, d]; k, v: [B, Lk, N, d]; all one dtype.
      kv_len: optional int32 [B]; keys at positions >= kv_len[b] are masked out (sequence padding).

    Returns:
      [B, Lq, N, d] in q's dtype.
    """
    scale = 1.0 / np.sqrt(q.shape[-1])
    precision = jax.lax.Precision.HIGHEST if q.dtype == jnp.float32 else None
    logits = (
        jnp.einsum("bqnd,bknd->bnqk", q, k, preferred_element_type=jnp.float32, precision=precision) * scale
    )
    if kv_len is not None:
        valid = jnp.arange(k.shape[1])[None, :] < kv_len[:, None]  # [B, Lk]
        logits = jnp.where(valid[:, None, None, :], logits, -jnp.inf)
    probs = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
    return jnp.einsum(
        "bnqk,bknd->bqnd", probs, v, preferred_element_type=jnp.float32, precision=precision
    ).astype(q.dtype)


def cudnn_attention(q: jax.Array, k: jax.Array, v: jax.Array, kv_len: jax.Array | None = None) -> jax.Array:
    """cuDNN flash attention (GPU), same contract as `xla_attention`.

    cuDNN's fused kernel takes bfloat16/float16 only; float32 inputs run the XLA path so that float32
    results stay float32-exact.
    """
    if q.dtype == jnp.float32:
        return xla_attention(q, k, v, kv_len)
    lengths = None if kv_len is None else kv_len.astype(jnp.int32)
    return jax.nn.dot_product_attention(q, k, v, key_value_seq_lengths=lengths, implementation="cudnn")


SPLASH_BLOCK = 512


def splash_attention(
    q: jax.Array, k: jax.Array, v: jax.Array, kv_len: jax.Array | None = None, interpret: bool = False
) -> jax.Array:
    """Pallas splash attention (TPU), same contract as `xla_attention`.

    Sequences are zero-padded to a multiple of the kernel block; padded keys (and keys past `kv_len`)
    get segment id 1 and real ones 0, so no query attends to them, and padded query rows are dropped.
    The kernel does not scale, so q is multiplied by 1/sqrt(d) first. `interpret=True` runs the kernel
    in the Pallas interpreter (any platform; for tests).
    """
    from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as kernels
    from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_mask as masks

    b, lq, n, d = q.shape
    lk = k.shape[1]
    block = min(SPLASH_BLOCK, _round_up(max(lq, lk), 128))
    lq_p, lk_p = _round_up(lq, block), _round_up(lk, block)

    def to_heads(a, length):  # [B, L, N, d] -> zero-padded [B, N, length, d]
        return jnp.pad(a, ((0, 0), (0, length - a.shape[1]), (0, 0), (0, 0))).transpose(0, 2, 1, 3)

    qh = to_heads(q * jnp.asarray(1.0 / np.sqrt(d), q.dtype), lq_p)
    kh, vh = to_heads(k, lk_p), to_heads(v, lk_p)
    mask = masks.MultiHeadMask([masks.FullMask((lq_p, lk_p))] * n)
    sizes = kernels.BlockSizes(block_q=block, block_kv=block, block_kv_compute=block)
    kernel = kernels.make_splash_mha(
        mask, head_shards=1, q_seq_shards=1, block_sizes=sizes, interpret=interpret
    )
    valid = jnp.full((b,), lk, jnp.int32) if kv_len is None else kv_len.astype(jnp.int32)
    kv_segments = (jnp.arange(lk_p)[None, :] >= valid[:, None]).astype(jnp.int32)  # [B, Lk_p]
    q_segments = jnp.zeros((b, lq_p), jnp.int32)

    def one(qb, kb, vb, qs, ks):
        return kernel(qb, kb, vb, segment_ids=kernels.SegmentIds(q=qs, kv=ks))

    out = jax.vmap(one)(qh, kh, vh, q_segments, kv_segments)  # [B, N, Lq_p, d]
    return out[:, :, :lq].transpose(0, 2, 1, 3).astype(q.dtype)


def _round_up(x: int, m: int) -> int:
    return -(-x // m) * m


AttentionFn = Callable[..., jax.Array]
BACKENDS: dict[str, AttentionFn] = {
    "xla": xla_attention,
    "cudnn": cudnn_attention,
    "splash": splash_attention,
}
_BY_PLATFORM = {"gpu": "cudnn", "cuda": "cudnn", "tpu": "splash"}


def default_backend() -> str:
    """The backend for the default platform: splash on TPU, cuDNN on GPU, XLA elsewhere.

    Override with the `attention_backend` argument of the model or the COSJAX_ATTENTION environment
    variable.
    """
    forced = os.environ.get("COSJAX_ATTENTION")
    if forced:
        return forced
    return _BY_PLATFORM.get(jax.default_backend(), "xla")


def attention(
    q: jax.Array, k: jax.Array, v: jax.Array, kv_len: jax.Array | None = None, backend: str | None = None
) -> jax.Array:
    """Multi-head attention through the chosen backend ([B, L, N, d] layout, see `xla_attention`)."""
    name = backend or default_backend()
    if name not in BACKENDS:
        raise ValueError(f"unknown attention backend {name!r}; available: {', '.join(BACKENDS)}")
    return BACKENDS[name](q, k, v, kv_len=kv_len)
