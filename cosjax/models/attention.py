"""Rotary position embedding and the attention seam of the Wan DiT.

Every attention call in the model goes through `attention(...)`; the backend is picked by platform
(Pallas splash on TPU, cuDNN flash on GPU, XLA elsewhere) and can be overridden by name. Layout
inside the model is token-major: q, k, v are [B, L, N, d]; `kv_len` masks padded keys.

Backends: "xla" (plain softmax attention; XLA:CPU fuses it without writing the logits, XLA on GPU/TPU
materialises [B, N, Lq, Lk] float32 logits), "chunked" (the same math one block of queries at a time,
so the logits take at most `CHUNK_LOGIT_BYTES`), "cudnn" (cuDNN flash, bfloat16/float16; float32
inputs take "xla" or, when the logits would be large, "chunked") and "splash" (Pallas, TPU).
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


CHUNK_LOGIT_BYTES = 2**31  # 2 GiB of float32 logits per query block


def _query_block(b: int, lq: int, n: int, lk: int) -> int:
    """Largest power-of-two query block (>= 128) whose float32 logits [b, n, block, lk] fit the cap."""
    block = 128
    while block < lq and 4 * b * n * (2 * block) * lk <= CHUNK_LOGIT_BYTES:
        block *= 2
    return min(block, lq)


def chunked_attention(
    q: jax.Array, k: jax.Array, v: jax.Array, kv_len: jax.Array | None = None, block: int | None = None
) -> jax.Array:
    """`xla_attention` over blocks of queries (`lax.map`), each block against all keys.

    Every query row computes exactly the formula of `xla_attention` (no online softmax), so float32
    stays float32-exact; peak memory is one block's logits [B, N, block, Lk] instead of all of them.
    Used for float32 references at long sequence lengths on GPU (480p: 32,760 tokens, whose full
    float32 logits are 172 GB for 40 heads).

    Args:
      q: [B, Lq, N, d]; k, v: [B, Lk, N, d]; kv_len: optional int32 [B] (see `xla_attention`).
      block: queries per block (None: the largest power of two within `CHUNK_LOGIT_BYTES`).

    Returns:
      [B, Lq, N, d] in q's dtype.
    """
    b, lq, n, d = q.shape
    block = block or _query_block(b, lq, n, k.shape[1])
    if block >= lq:
        return xla_attention(q, k, v, kv_len)
    nblocks = -(-lq // block)
    qp = jnp.pad(q, ((0, 0), (0, nblocks * block - lq), (0, 0), (0, 0)))
    qb = qp.reshape(b, nblocks, block, n, d).transpose(1, 0, 2, 3, 4)  # [nblocks, B, block, N, d]
    out = jax.lax.map(lambda qi: xla_attention(qi, k, v, kv_len), qb)
    return out.transpose(1, 0, 2, 3, 4).reshape(b, nblocks * block, n, d)[:, :lq]


def cudnn_attention(q: jax.Array, k: jax.Array, v: jax.Array, kv_len: jax.Array | None = None) -> jax.Array:
    """cuDNN flash attention (GPU), same contract as `xla_attention`.

    cuDNN's fused kernel takes bfloat16/float16 only; float32 inputs run the XLA path so that float32
    results stay float32-exact (by query blocks when the full logits would exceed CHUNK_LOGIT_BYTES).
    """
    if q.dtype == jnp.float32:
        b, lq, n, _ = q.shape
        if 4 * b * n * lq * k.shape[1] > CHUNK_LOGIT_BYTES:
            return chunked_attention(q, k, v, kv_len)
        return xla_attention(q, k, v, kv_len)
    lengths = None if kv_len is None else kv_len.astype(jnp.int32)
    return jax.nn.dot_product_attention(q, k, v, key_value_seq_lengths=lengths, implementation="cudnn")


SPLASH_BLOCK = 512


def splash_blocks(lq: int, lk: int) -> tuple[int, int, int]:
    """(block_q, block_kv, block_kv_compute) of the splash kernel for Lq queries and Lk keys.

    Default: SPLASH_BLOCK for all three (capped at the longer sequence rounded up to 128). The
    COSJAX_SPLASH_BLOCKS="bq,bkv,bkv_compute" environment variable overrides them (multiples of 128,
    bkv_compute dividing bkv; each capped at its sequence rounded up to 128) for tuning on a TPU:
    larger tiles amortise the softmax's vector work (benchmarks/README.md, TPU plan).
    """
    forced = os.environ.get("COSJAX_SPLASH_BLOCKS")
    if not forced:
        block = min(SPLASH_BLOCK, _round_up(max(lq, lk), 128))
        return block, block, block
    bq, bkv, bkc = (int(b) for b in forced.split(","))
    bq, bkv = min(bq, _round_up(lq, 128)), min(bkv, _round_up(lk, 128))
    bkc = min(bkc, bkv)
    if bq % 128 or bkv % 128 or bkc % 128 or bkv % bkc:
        raise ValueError(
            f"COSJAX_SPLASH_BLOCKS={forced!r}: blocks must be multiples of 128, bkv_compute | bkv"
        )
    return bq, bkv, bkc


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
    block_q, block_kv, block_kv_compute = splash_blocks(lq, lk)
    lq_p, lk_p = _round_up(lq, block_q), _round_up(lk, block_kv)

    def to_heads(a, length):  # [B, L, N, d] -> zero-padded [B, N, length, d]
        return jnp.pad(a, ((0, 0), (0, length - a.shape[1]), (0, 0), (0, 0))).transpose(0, 2, 1, 3)

    qh = to_heads(q * jnp.asarray(1.0 / np.sqrt(d), q.dtype), lq_p)
    kh, vh = to_heads(k, lk_p), to_heads(v, lk_p)
    mask = masks.MultiHeadMask([masks.FullMask((lq_p, lk_p))] * n)
    sizes = kernels.BlockSizes(block_q=block_q, block_kv=block_kv, block_kv_compute=block_kv_compute)
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
    "chunked": chunked_attention,
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
