"""The FLOP model of `benchmarks/flops.py`: a hand count, the published anchors, XLA's cost analysis.

Tolerances:
  * hand count on a tiny config: exact (integer arithmetic written out term by term).
  * Wan2.2-A14B anchors (performance-anchors.md section 4): 480p 1,678 TF, 720p 6,523 TF per forward,
    within 0.1% (the anchors are rounded to 4 significant digits).
  * XLA `compiled.cost_analysis()["flops"]`: within 3%. XLA also counts the O(L D) vector work the
    model leaves out (norms, RoPE, softmax, GELU, modulation): measured +1.0..1.4% here. XLA counts
    a `while` (scan) body once whatever its trip count, so the forward is compared at one layer
    and the multi-layer text cache (vmapped, no loop) at three.
"""

from __future__ import annotations

import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import cosjax as cj

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from flops import DEVICES, forward_cost, param_count, step_cost, tokens_for  # noqa: E402

XLA_TOL = 0.03


def test_hand_count_on_a_tiny_config():
    config = cj.DiTConfig(
        dim=8, ffn_dim=16, num_heads=2, num_layers=2, in_dim=4, out_dim=4, text_dim=6, freq_dim=4
    )
    # L = 10 tokens, text 3 tokens, batch 1: per layer
    #   linear     2*10*(6*64 + 2*8*16)    = 20*(384 + 256) = 12800
    #   self attn  4*10*10*8               = 3200
    #   cross attn 4*10*3*8                = 960
    #   text k, v  4*3*64                  = 768
    # outside: patch embed + head 2*10*8*4*(4 + 4) = 5120; text embed 2*3*8*(6 + 8) = 672;
    #   time 2*1*8*(4 + 56) = 960
    c = forward_cost(config, tokens=10, text_len=3)
    assert (c.linear, c.self_attention, c.cross_attention, c.text_kv) == (25600, 6400, 1920, 1536)
    assert (c.embed_head, c.text_embed, c.time_embed) == (5120, 672, 960)
    assert c.total == 25600 + 6400 + 1920 + 1536 + 5120 + 672 + 960
    cached = forward_cost(config, tokens=10, text_len=3, cfg=True, cached_text_kv=True)
    assert cached.text_kv == cached.text_embed == 0 and cached.linear == 2 * c.linear
    ti2v = forward_cost(config, tokens=10, text_len=3, per_token_t=True)
    assert ti2v.time_embed == 10 * c.time_embed
    # bytes: weights once + per layer and token c(20 D + 2 F) + 24 D
    assert c.activation_bytes == 2 * 10 * (2 * (160 + 32) + 192)
    assert c.weight_bytes == 2 * param_count(config)


def test_param_count_matches_the_model():
    for name in ("tiny", "tiny-i2v", "tiny-ti2v", "wan2.1-t2v-1.3b", "wan2.2-i2v-a14b"):
        config = cj.get_preset(name).dit
        leaves = jax.tree.leaves(cj.abstract_params(config))
        assert param_count(config) == sum(int(np.prod(leaf.shape)) for leaf in leaves), name
    assert param_count(cj.get_preset("wan2.2-t2v-a14b").dit) == 14_288_491_584  # wan22.md: 14.288 B


def test_a14b_anchors():
    config = cj.get_preset("wan2.2-t2v-a14b").dit
    assert tokens_for(config, 81, 480, 832) == 32_760 and tokens_for(config, 81, 720, 1280) == 75_600
    f480, f720 = forward_cost(config, 32_760), forward_cost(config, 75_600)
    assert f480.total == pytest.approx(1678e12, rel=1e-3)
    assert f720.total == pytest.approx(6523e12, rel=1e-3)
    assert f480.linear == pytest.approx(783.2e12, rel=1e-3)
    assert f720.self_attention == pytest.approx(4682.0e12, rel=1e-3)
    # a CFG step is two forwards; 720p on one H100 at 100% of 800 TF/s: 16.3 s (anchors section 0)
    assert step_cost(config, 75_600).total / 800e12 == pytest.approx(16.3, abs=0.05)
    assert f720.floor_seconds(DEVICES["tpu-v6e"]) == pytest.approx(7.11, abs=0.01)


def _dit_structs(config, batch, grid, per_token):
    tokens = int(np.prod(grid)) // config.patch_volume
    x = jax.ShapeDtypeStruct((batch, config.out_dim, *grid), jnp.float32)
    t = jax.ShapeDtypeStruct((batch, tokens) if per_token else (batch,), jnp.float32)
    ctx = jax.ShapeDtypeStruct((batch, 512, config.text_dim), jnp.float32)
    return x, t, ctx, tokens


@pytest.mark.parametrize("model_type", ["t2v", "ti2v"])
def test_against_xla_cost_analysis(model_type):
    config = cj.DiTConfig(
        dim=256,
        ffn_dim=1024,
        num_heads=2,
        num_layers=1,
        in_dim=16,
        out_dim=16,
        model_type=model_type,
        text_dim=64,
        freq_dim=32,
    )
    module, params = cj.WanDiT(config), cj.abstract_params(config)
    x, t, ctx, tokens = _dit_structs(config, 2, (4, 16, 16), model_type == "ti2v")
    fwd = jax.jit(lambda p, x, t, c: module.apply({"params": p}, x, t, c))
    xla = fwd.lower(params, x, t, ctx).compile().cost_analysis()["flops"]
    model = forward_cost(config, tokens, batch=2, compute_bytes=4).total
    print(f"{model_type}: XLA {xla / 1e9:.3f} GFLOP, model {model / 1e9:.3f} GFLOP, ratio {xla / model:.4f}")
    assert xla == pytest.approx(model, rel=XLA_TOL)

    # the cached forward and the cache itself (three layers, vmapped: no loop)
    kv = jax.ShapeDtypeStruct((1, 2, 512, config.num_heads, config.head_dim), jnp.float32)
    cached = jax.jit(
        lambda p, x, t, k, v: module.apply({"params": p}, x, t, None, text_kv=cj.models.dit.TextKV(k, v))
    )
    xla_cached = cached.lower(params, x, t, kv, kv).compile().cost_analysis()["flops"]
    model_cached = forward_cost(config, tokens, batch=2, cached_text_kv=True).total
    assert xla_cached == pytest.approx(model_cached, rel=XLA_TOL)
    deep = cj.DiTConfig(**{**config.to_dict(), "num_layers": 3})
    enc = jax.jit(cj.WanDiT(deep).encode_text).lower(cj.abstract_params(deep), ctx).compile()
    full, cheap = (
        forward_cost(deep, tokens, batch=2),
        forward_cost(deep, tokens, batch=2, cached_text_kv=True),
    )
    assert enc.cost_analysis()["flops"] == pytest.approx(full.total - cheap.total, rel=XLA_TOL)
