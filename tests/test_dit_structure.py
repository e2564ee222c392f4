"""Structural promises of the DiT: scan over layers, the plan seam, loading paths."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import struct

import cosjax as cj
from cosjax.plan import LayerPlan


def _compiled_program(config: cj.DiTConfig) -> str:
    """The optimized HLO text XLA compiles the DiT forward into (abstract params, tiny shapes)."""
    module = cj.WanDiT(config)
    params = cj.abstract_params(config)
    x = jax.ShapeDtypeStruct((1, 16, 2, 8, 8), jnp.float32)
    t = jax.ShapeDtypeStruct((1,), jnp.float32)
    ctx = jax.ShapeDtypeStruct((1, 8, config.text_dim), jnp.float32)
    fn = jax.jit(lambda p, x, t, c: module.apply({"params": p}, x, t, c))
    return fn.lower(params, x, t, ctx).compile().as_text()


def _instructions(hlo_text: str) -> int:
    return sum(" = " in line for line in hlo_text.splitlines())


def test_compiled_program_does_not_grow_with_depth():
    """The blocks run under one scan: 40 layers compile to the same program as 4 (one loop body,
    a different trip count and stacked parameter shapes), so compile time does not grow with depth.
    Counted in the compiled program's instructions, not timed: a wall-clock ratio flakes on a busy
    machine. An unrolled stack would repeat the block's instructions once per layer."""
    base = dict(dim=256, ffn_dim=512, num_heads=2, in_dim=16, out_dim=16, text_dim=64)
    shallow = _compiled_program(cj.DiTConfig(num_layers=4, **base))
    deep = _compiled_program(cj.DiTConfig(num_layers=40, **base))
    shallow, deep = _instructions(shallow), _instructions(deep)  # 1066 each at the time of writing
    assert deep <= 1.05 * shallow, (shallow, deep)


@struct.dataclass
class ScaleLayer(LayerPlan):
    """A test plan: multiply the residual stream after block `layer` by `factor`; capture its RMS."""

    layer: jax.Array = None
    factor: jax.Array = None

    def after_block(self, layer, hidden, state):
        hidden = jnp.where(layer == self.layer, hidden * self.factor, hidden)
        return hidden, state, {"rms": jnp.sqrt(jnp.mean(hidden**2))}


def test_plan_is_data_inside_the_layer_scan():
    cfg = cj.DiTConfig(**{**cj.get_preset("tiny").dit.to_dict(), "num_layers": 4})
    params = cj.init_params(cfg, jax.random.key(0))
    module = cj.WanDiT(cfg)
    x = jax.random.normal(jax.random.key(1), (1, 16, 2, 4, 4))
    t, ctx = jnp.array([500.0]), jax.random.normal(jax.random.key(2), (1, 5, cfg.text_dim))
    run = jax.jit(lambda plan: module.apply({"params": params}, x, t, ctx, plan=plan))

    plain = module.apply({"params": params}, x, t, ctx)
    identity, (caps, _) = run(ScaleLayer(layer=jnp.int32(1), factor=jnp.float32(1.0)))
    np.testing.assert_allclose(identity, plain, rtol=1e-6, atol=1e-6)  # the plan seam alone changes nothing
    assert caps["rms"].shape == (4,)  # one capture per layer, stacked by the scan

    rms_by_layer = []
    for layer in range(4):  # a sweep over layers: new data, same compiled program
        out, (caps, _) = run(ScaleLayer(layer=jnp.int32(layer), factor=jnp.float32(0.0)))
        assert caps["rms"][layer] == 0.0 and not np.allclose(out, plain)
        rms_by_layer.append(caps["rms"])
    assert run._cache_size() == 1
    # zeroing layer k leaves the captures of earlier layers untouched
    np.testing.assert_allclose(rms_by_layer[3][:3], caps["rms"][:3])
    np.testing.assert_allclose(rms_by_layer[2][:2], np.asarray(caps["rms"][:2]))


def test_direct_pytorch_load_equals_converted(tmp_path):
    from helpers.torch_refs import make_reference, save_official

    model = make_reference(in_channels=36, out_channels=16, seed=3)
    save_official(model, tmp_path / "src")
    cj.convert_checkpoint(tmp_path / "src", tmp_path / "out", dtype="float32", progress=False)
    converted, direct = cj.load_dit(tmp_path / "out"), cj.load_dit(tmp_path / "src")
    assert converted.config == direct.config and converted.dtype == direct.dtype == jnp.float32
    for a, b in zip(jax.tree.leaves(converted.params), jax.tree.leaves(direct.params), strict=True):
        np.testing.assert_array_equal(a, b)
    # a stored-dtype change on load
    as_bf16 = cj.load_dit(tmp_path / "out", dtype="bfloat16")
    assert {leaf.dtype for leaf in jax.tree.leaves(as_bf16.params)} == {jnp.dtype(jnp.bfloat16)}
    with pytest.raises(ValueError, match=r"experts \['a', 'b'\]"):
        _ = cj.LoadedDiT(converted.config, {"a": 1, "b": 2}, None, jnp.float32).params
