"""Rotary position embedding and the attention seam of the Wan DiT.

Every attention call in the model goes through `attention(...)`; the backend is picked by platform
(XLA everywhere for now; the GPU cuDNN and TPU splash kernels plug in here) and can be overridden by
name. Layout inside the model is token-major: q, k, v are [B, L, N, d].
"""

from __future__ import annotations

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


AttentionFn = Callable[..., jax.Array]
BACKENDS: dict[str, AttentionFn] = {"xla": xla_attention}


def default_backend() -> str:
    """The backend used when none is named: XLA on every platform until the fast kernels land."""
    return "xla"


def attention(
    q: jax.Array, k: jax.Array, v: jax.Array, kv_len: jax.Array | None = None, backend: str | None = None
) -> jax.Array:
    """Multi-head attention through the chosen backend ([B, L, N, d] layout, see `xla_attention`)."""
    name = backend or default_backend()
    if name not in BACKENDS:
        raise ValueError(f"unknown attention backend {name!r}; available: {', '.join(BACKENDS)}")
    return BACKENDS[name](q, k, v, kv_len=kv_len)
