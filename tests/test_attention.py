"""Attention backends: padding masks, the splash kernel (Pallas interpreter), backend choice.

Tolerance: the backends sum in different orders (splash uses an online softmax over 512-token
blocks), float32: max abs error <= 1e-5 on unit-variance inputs (measured ~2e-6).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cosjax.models import attention as A


def _qkv(b, lq, lk, n, d, seed=0):
    k = jax.random.split(jax.random.key(seed), 3)
    return (
        jax.random.normal(k[0], (b, lq, n, d)),
        jax.random.normal(k[1], (b, lk, n, d)),
        jax.random.normal(k[2], (b, lk, n, d)),
    )


def test_padding_does_not_change_the_result():
    q, k, v = _qkv(2, 27, 27, 4, 24)
    pad = lambda a: jnp.pad(a, ((0, 0), (0, 5), (0, 0), (0, 0)), constant_values=3.0)  # noqa: E731
    full = A.xla_attention(q, k, v)
    padded = A.xla_attention(pad(q), pad(k), pad(v), kv_len=jnp.array([27, 27]))
    np.testing.assert_allclose(padded[:, :27], full, rtol=1e-6, atol=1e-6)
    short = A.xla_attention(q, k[:, :20], v[:, :20])  # kv_len per batch row
    masked = A.xla_attention(q, k, v, kv_len=jnp.array([20, 27]))
    np.testing.assert_allclose(masked[0], short[0], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(masked[1], full[1], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("lq, lk, kv_len", [(100, 100, (100, 77)), (300, 512, None), (27, 27, (27, 20))])
def test_splash_matches_xla(lq, lk, kv_len):
    q, k, v = _qkv(2, lq, lk, 2, 128, seed=lq)
    kv = None if kv_len is None else jnp.array(kv_len)
    ours = A.splash_attention(q, k, v, kv, interpret=True)
    ref = A.xla_attention(q, k, v, kv)
    assert ours.shape == ref.shape
    np.testing.assert_allclose(ours, ref, atol=1e-5)


def test_backend_choice(monkeypatch):
    assert A.default_backend() == {"tpu": "splash", "gpu": "cudnn"}.get(jax.default_backend(), "xla")
    monkeypatch.setenv("COSJAX_ATTENTION", "splash")
    assert A.default_backend() == "splash"
    with pytest.raises(ValueError, match="unknown attention backend 'flash3'; available: xla, cudnn, splash"):
        A.attention(*_qkv(1, 4, 4, 1, 8), backend="flash3")
    q, k, v = _qkv(1, 9, 9, 2, 16)
    np.testing.assert_array_equal(A.cudnn_attention(q, k, v), A.xla_attention(q, k, v))  # float32 -> XLA path


@pytest.mark.skipif(jax.default_backend() != "gpu", reason="needs a GPU (cuDNN)")
def test_cudnn_matches_xla_at_a14b_width():
    # 40 heads x 128 (A14B), 2048 tokens, bf16: the two kernels round differently; budget 2e-2 relative
    q, k, v = (a.astype(jnp.bfloat16) for a in _qkv(1, 2048, 2048, 40, 128))
    ours = A.cudnn_attention(q, k, v, jnp.array([2000]))
    ref = A.xla_attention(q, k, v, jnp.array([2000]))
    err = float(jnp.linalg.norm((ours - ref).astype(jnp.float32)) / jnp.linalg.norm(ref.astype(jnp.float32)))
    assert err <= 2e-2, err
