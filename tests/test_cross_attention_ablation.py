"""The cross-attention (text) ablation, an intervention built only on the generic hooks.

Tiny random models, float32 on CPU. The reference zeroes block k's cross-attention output another
way: its output projection (`blocks/cross_attn/o`, kernel and bias) is set to zero in the parameter
tree, so that block's cross-attention adds exactly 0.0 to the residual stream, as the ablation does.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import cosjax as cj
from cosjax import transforms as T
from cosjax.interventions.cross_attention import CrossAttentionOff, ablate_cross_attention
from cosjax.sampling.sampler import Conditioning, SamplerSettings, make_sampler

STEPS = 3
SHAPE = (1, 16, 2, 4, 4)  # 2 latent frames, 2 x 2 patches -> 8 tokens
KEY = jax.random.key(11)
SETTINGS = SamplerSettings(STEPS, 5.0, (4.0, 4.0), grid="diffsynth", solver="euler")


@pytest.fixture(scope="module")
def t2v():
    cfg = cj.get_preset("tiny").dit
    params = cj.init_params(cfg, jax.random.key(0))
    k1, k2 = jax.random.split(jax.random.key(1))
    cond = Conditioning(
        context=jax.random.normal(k1, (1, 4, cfg.text_dim)),
        negative=jax.random.normal(k2, (1, 3, cfg.text_dim)),
        latent_shape=SHAPE,
    )
    return make_sampler(cfg, {"dit": params}, SETTINGS), cond, params


def _without_cross_attention(params, layer: int):
    """The parameter tree with block `layer`'s cross-attention output projection zeroed."""
    o = params["blocks"]["cross_attn"]["o"]
    zeroed = {name: w.at[layer].set(0.0) for name, w in o.items()}
    cross = {**params["blocks"]["cross_attn"], "o": zeroed}
    return {**params, "blocks": {**params["blocks"], "cross_attn": cross}}


def test_dit_with_the_view_equals_zeroed_output_projection(t2v):
    sampler, cond, params = t2v
    cfg = sampler.config
    module = cj.WanDiT(cfg)
    x = jax.random.normal(jax.random.key(2), SHAPE)
    t = jnp.array([700.0])
    run = jax.jit(lambda p, plan: module.apply({"params": p}, x, t, cond.context, plan=plan)[0])
    plain = jax.jit(lambda p: module.apply({"params": p}, x, t, cond.context))(params)
    for layer in range(cfg.num_layers):
        mask = jnp.zeros((cfg.num_layers,), bool).at[layer].set(True)
        ablated = run(params, CrossAttentionOff(mask, jnp.bool_(True)))
        np.testing.assert_array_equal(ablated, run(_without_cross_attention(params, layer), cj.LayerPlan()))
        assert not np.array_equal(ablated, plain)
        off = run(params, CrossAttentionOff(mask, jnp.bool_(False)))  # outside the plan's steps
        np.testing.assert_array_equal(off, run(params, cj.LayerPlan()))
    assert run._cache_size() == 2  # one program for the view, one for the empty view


def test_ablation_equals_a_hand_written_loop_with_zeroed_weights_at_that_step(t2v):
    sampler, cond, params = t2v
    layer, step = 1, 1
    out = jax.jit(T.trace_x0(ablate_cross_attention(sampler, layers=[layer], steps=[step])))(cond, KEY)
    plain = jax.jit(T.trace_x0(sampler))(cond, KEY)
    # by hand: the plain DiT, with the zeroed weights at that step only
    module, cfg = cj.WanDiT(sampler.config), sampler.config
    sig, ts = sampler.schedule.sigmas, sampler.schedule.timesteps
    x = jax.random.normal(jax.random.split(KEY)[0], SHAPE)
    pad = lambda c: jnp.pad(c, ((0, 0), (0, cfg.text_len - c.shape[1]), (0, 0)))  # noqa: E731
    ctx = jnp.concatenate([pad(cond.context), pad(cond.negative)])
    scale = sampler.segments[0][3]
    for i in range(STEPS):
        p = _without_cross_attention(params, layer) if i == step else params
        v2 = module.apply({"params": p}, jnp.concatenate([x, x]), jnp.full((2,), ts[i]), ctx)
        v = v2[1:] + scale * (v2[:1] - v2[1:])
        np.testing.assert_allclose(out.trace.x0[i], x - sig[i] * v, rtol=1e-5, atol=1e-5)
        x = x + (sig[i + 1] - sig[i]) * v
    np.testing.assert_allclose(out.latents, x, rtol=1e-5, atol=1e-5)
    # identity outside the plan: the steps before it are bit-equal to the plain run
    np.testing.assert_array_equal(out.trace.x0[:step], plain.trace.x0[:step])
    assert float(jnp.abs(out.trace.x0[step] - plain.trace.x0[step]).max()) > 1e-3


def test_every_step_equals_the_sampler_with_zeroed_weights(t2v):
    sampler, cond, params = t2v
    zeroed = make_sampler(sampler.config, {"dit": _without_cross_attention(params, 0)}, SETTINGS)
    out = jax.jit(ablate_cross_attention(sampler, layers=0))(cond, KEY)
    np.testing.assert_allclose(out.latents, jax.jit(zeroed)(cond, KEY).latents, rtol=1e-6, atol=1e-6)


def test_a_traced_layer_and_step_sweep_compiles_once_and_is_flagged(t2v):
    sampler, cond, _ = t2v
    run = jax.jit(lambda c, k, layer, step: ablate_cross_attention(sampler, layer, step)(c, k))
    plain = jax.jit(sampler)(cond, KEY).latents
    finals = set()
    for layer in range(sampler.num_layers):
        for step in range(STEPS):
            out = run(cond, KEY, jnp.int32(layer), jnp.int32(step))
            assert int(out.index_error) == 0
            finals.add(float(jnp.sum(out.latents)))
    assert len(finals) == sampler.num_layers * STEPS  # each (layer, step) made a different run
    outside = run(cond, KEY, jnp.int32(sampler.num_layers), jnp.int32(0))
    assert int(outside.index_error) == T.INDEX_FLAGS["layer"]
    np.testing.assert_array_equal(outside.latents, plain)  # an out-of-range layer ablates nothing
    assert run._cache_size() == 1


def test_composes_with_other_interventions(t2v):
    sampler, cond, _ = t2v
    both = jax.jit(ablate_cross_attention(ablate_cross_attention(sampler, 0, [0]), 1, [0]))(cond, KEY)
    at_once = jax.jit(ablate_cross_attention(sampler, [0, 1], [0]))(cond, KEY)
    np.testing.assert_allclose(both.latents, at_once.latents, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match=r"layer index \[2\] out of range"):
        ablate_cross_attention(sampler, [2])
    # captures read the ablated run: energy of layer 1 at step 0 moves, layer 0's does not
    plain = jax.jit(T.capture(sampler, [0, 1], [0]))(cond, KEY).trace.energy
    energy = jax.jit(T.capture(ablate_cross_attention(sampler, 1, [0]), [0, 1], [0]))(cond, KEY).trace.energy
    np.testing.assert_allclose(energy[:, 0], plain[:, 0], rtol=1e-6)
    assert float(jnp.abs(energy[:, 1] - plain[:, 1]).max()) > 1e-3
