"""Semantics of the sampler transforms, checked on tiny random models.

Float tolerances: two compiled programs that compute the same function may fuse and order float32
operations differently, so "equal" means relative error <= 1e-5 (measured ~1e-6) unless the values
are bit-copied (then exact).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers.numerics import relative_error

import cosjax as cj
from cosjax import transforms as T
from cosjax.interventions.capture import EnergyLayers
from cosjax.sampling.sampler import Conditioning, SamplerSettings, make_sampler

STEPS = 6
SHAPE = (1, 16, 3, 4, 4)
KEY = jax.random.key(7)


@pytest.fixture(scope="module")
def moe():
    """A two-expert I2V sampler with CFG, Euler on the DiffSynth grid (the VBVR setting, shortened)."""
    cfg = cj.get_preset("tiny-i2v").dit
    experts = {
        "high_noise": cj.init_params(cfg, jax.random.key(0)),
        "low_noise": cj.init_params(cfg, jax.random.key(1)),
    }
    settings = SamplerSettings(
        steps=STEPS, shift=5.0, guide_scale=(5.0, 4.0), boundary=0.875, grid="diffsynth", solver="euler"
    )
    sampler = make_sampler(cfg, experts, settings)
    k1, k2, k3 = jax.random.split(jax.random.key(3), 3)
    cond = Conditioning(
        context=jax.random.normal(k1, (1, 5, 32)),
        negative=jax.random.normal(k2, (1, 3, 32)),
        y=jax.random.normal(k3, (1, 20, *SHAPE[2:])),
        latent_shape=SHAPE,
    )
    return sampler, cond, experts


def _manual_run(sampler, cond, experts, key, noise_step=None, noise_frame=None, energy_layers=None):
    """The same sampling, written by hand as a Python loop over steps with plain DiT calls."""
    cfg = sampler.config
    module = cj.WanDiT(cfg)
    sig, ts = sampler.schedule.sigmas, sampler.schedule.timesteps
    key_noise, key_plan = jax.random.split(key)
    x = jax.random.normal(key_noise, SHAPE)
    pad = lambda c: jnp.pad(c, ((0, 0), (0, cfg.text_len - c.shape[1]), (0, 0)))  # noqa: E731
    ctx = jnp.concatenate([pad(cond.context), pad(cond.negative)])
    y = jnp.concatenate([cond.y, cond.y])
    x0s, energies = [], []
    for i in range(STEPS):
        k_step, k_frame = jax.random.split(jax.random.fold_in(key_plan, i))
        if i == noise_step:
            x = jax.random.normal(k_step, SHAPE)
        if noise_frame is not None:
            x = x.at[:, :, noise_frame].set(jax.random.normal(k_frame, SHAPE)[:, :, noise_frame])
        name, _, _, scale = next(s for s in sampler.segments if s[1] <= i < s[2])
        t = jnp.full((2,), ts[i])
        plan = EnergyLayers()
        v2, (ys, _) = module.apply({"params": experts[name]}, jnp.concatenate([x, x]), t, ctx, y, plan=plan)
        v = v2[1:] + scale * (v2[:1] - v2[1:])
        x0s.append(x - sig[i] * v)
        if energy_layers is not None:
            energies.append(ys["energy"][jnp.asarray(energy_layers), :1])
        x = x + (sig[i + 1] - sig[i]) * v
    return x, jnp.stack(x0s), (jnp.stack(energies) if energies else None)


def test_trace_x0_last_entry_is_the_final_latents_under_euler(moe):
    sampler, cond, _ = moe
    out = jax.jit(T.trace_x0(sampler))(cond, KEY)
    assert out.trace.x0.shape == (STEPS, *SHAPE)
    np.testing.assert_allclose(out.trace.x0[-1], out.latents, rtol=1e-6, atol=1e-6)  # sigma_N = 0
    plain = jax.jit(sampler)(cond, KEY)
    assert relative_error(out.latents, plain.latents) <= 1e-5  # tracing does not change the run


def test_swap_with_own_capture_is_identity(moe):
    sampler, cond, _ = moe
    captured = jax.jit(T.capture(sampler, layers=[1], steps=[2], what="hidden"))(cond, KEY)
    source = captured.trace.hidden[:, 0]  # [1 step, 2B, L, D]
    assert source.shape == (1, 2, 12, 48)
    swapped = jax.jit(T.swap_layer(sampler, layer=1, step=2, source=source))(cond, KEY)
    assert relative_error(swapped.latents, captured.latents) <= 1e-5
    other = jax.jit(T.swap_layer(sampler, layer=1, step=2, source=source[:, ::-1] + 1.0))(cond, KEY)
    assert relative_error(other.latents, captured.latents) > 1e-3


def test_ensemble_of_one_seed_and_of_identical_seeds_is_the_plain_sampler(moe):
    sampler, cond, _ = moe
    plain = jax.jit(sampler)(cond, KEY)
    one = jax.jit(T.ensemble(sampler, seeds=1, layers=[0, 1]))(cond, KEY)
    assert one.latents.shape == (1, *SHAPE)
    assert relative_error(one.latents[0], plain.latents) <= 1e-5
    same = jax.jit(T.ensemble(sampler, seeds=3, layers=[0, 1]))(cond, jnp.stack([KEY] * 3))
    for seed in range(3):
        assert relative_error(same.latents[seed], plain.latents) <= 1e-5


def test_ensemble_merges_the_chosen_layers_at_the_chosen_steps(moe):
    sampler, cond, _ = moe
    f = T.ensemble(
        T.capture(sampler, layers=[0, 1], steps=[0, 1], what="hidden"), seeds=3, layers=[0], steps=[0]
    )
    out = jax.jit(f)(cond, KEY)
    hidden = out.trace.hidden  # [seeds, steps, layers, 2B, L, D]
    assert hidden.shape[:3] == (3, 2, 2)
    np.testing.assert_allclose(hidden[1, 0, 0], hidden[0, 0, 0], rtol=1e-6, atol=1e-6)  # merged
    np.testing.assert_allclose(
        hidden[2, 0, 1], hidden[0, 0, 1], rtol=1e-5, atol=1e-5
    )  # same input downstream
    assert relative_error(hidden[1, 1, 0], hidden[0, 1, 0]) > 1e-3  # step 1 is not merged
    assert relative_error(out.latents[1], out.latents[0]) > 1e-3  # each seed keeps its own latents
    plain = jax.jit(sampler)(cond, KEY)
    assert relative_error(out.latents[0], plain.latents) > 1e-4  # the merge changed seed 0's run


def test_noise_at_step_leaves_earlier_steps_untouched(moe):
    sampler, cond, _ = moe
    plain = jax.jit(T.trace_x0(sampler))(cond, KEY).trace.x0
    noised = jax.jit(T.trace_x0(T.noise_at_step(sampler, 3)))(cond, KEY).trace.x0
    for step in range(3):
        assert relative_error(noised[step], plain[step]) <= 1e-5
    for step in range(3, STEPS):
        assert relative_error(noised[step], plain[step]) > 1e-3


def test_noise_at_frame_changes_that_frame_at_every_step_and_not_the_conditioning():
    cfg = cj.get_preset("tiny-ti2v").dit
    sampler = make_sampler(
        cfg,
        {"dit": cj.init_params(cfg, jax.random.key(0))},
        SamplerSettings(steps=STEPS, shift=5.0, guide_scale=(5.0, 5.0), grid="diffsynth", solver="euler"),
    )
    shape = (1, 48, 3, 4, 4)
    first = jax.random.normal(jax.random.key(1), (1, 48, 1, 4, 4))
    cond = Conditioning(
        context=jnp.ones((1, 4, 32)), negative=jnp.zeros((1, 2, 32)), first_frame=first, latent_shape=shape
    )
    plain = jax.jit(T.trace_x0(sampler))(cond, KEY)
    noised = jax.jit(T.trace_x0(T.noise_at_frame(sampler, 2)))(cond, KEY)
    for step in range(STEPS):
        assert relative_error(noised.trace.x0[step, :, :, 2], plain.trace.x0[step, :, :, 2]) > 1e-3
    np.testing.assert_array_equal(noised.latents[:, :, :1], first)  # the conditioning frame is kept
    np.testing.assert_array_equal(plain.latents[:, :, :1], first)


def test_compositions_equal_a_hand_written_loop(moe):
    sampler, cond, experts = moe
    by_hand_latents, by_hand_x0, _ = _manual_run(sampler, cond, experts, KEY, noise_step=2)
    out = jax.jit(T.trace_x0(T.noise_at_step(sampler, 2)))(cond, KEY)
    assert relative_error(out.latents, by_hand_latents) <= 1e-5
    assert relative_error(out.trace.x0, by_hand_x0) <= 1e-5

    by_hand_latents, _, by_hand_energy = _manual_run(
        sampler, cond, experts, KEY, noise_frame=1, energy_layers=[1, 0]
    )
    f = T.capture(T.noise_at_frame(sampler, 1), layers=[1, 0], steps=list(range(STEPS)))
    out = jax.jit(f)(cond, KEY)
    assert out.trace.energy.shape == (STEPS, 2, 1, 12)
    assert relative_error(out.latents, by_hand_latents) <= 1e-5
    assert relative_error(out.trace.energy, by_hand_energy) <= 1e-5


def test_sweeps_compile_once(moe):
    sampler, cond, _ = moe
    by_step = jax.jit(lambda c, k, s: T.noise_at_step(sampler, s)(c, k))
    finals = [by_step(cond, KEY, jnp.int32(s)).latents for s in range(STEPS)]
    assert by_step._cache_size() == 1
    assert len({float(jnp.sum(f)) for f in finals}) == STEPS  # each step really made a different run

    source = (
        jax.jit(T.capture(sampler, layers=[0], steps=[1], what="hidden"))(cond, KEY).trace.hidden[:, 0] + 1.0
    )
    by_layer = jax.jit(lambda c, k, layer: T.swap_layer(sampler, layer, 1, source)(c, k))
    for layer in range(sampler.num_layers):
        by_layer(cond, KEY, jnp.int32(layer))
    assert by_layer._cache_size() == 1


def test_bad_indices_are_refused_before_compiling(moe):
    sampler, cond, _ = moe
    with pytest.raises(ValueError, match=r"step index 6 out of range: the sampler has 6 steps \(0..5\)"):
        T.noise_at_step(sampler, 6)
    with pytest.raises(ValueError, match=r"layer index \[0, 2\] out of range: the sampler has 2 layers"):
        T.capture(sampler, layers=[0, 2], steps=[0])
    with pytest.raises(
        ValueError, match=r"latent frame index 3 out of range: the sampler has 3 latent frames"
    ):
        T.noise_at_frame(sampler, 3)(cond, KEY)
    with pytest.raises(ValueError, match="capture what='logits'"):
        T.capture(sampler, layers=[0], steps=[0], what="logits")
    with pytest.raises(ValueError, match=r"source must be \[batch, L, D\] or \[2, batch, L, D\]"):
        T.swap_layer(sampler, 0, [0, 1], jnp.zeros((1, 2, 12, 48)))
    assert list(T.default_ensemble_layers(40)) == list(range(20, 30)) and list(
        T.default_ensemble_layers(2)
    ) == [1]
    with pytest.raises(ValueError, match="no layer index given"):
        T.ensemble(sampler, layers=[])
    with pytest.raises(ValueError, match="seeds must be >= 1"):
        T.ensemble(sampler, seeds=0)
    with pytest.raises(ValueError, match="latents have 48 channels; the model makes 16"):
        sampler(cond.replace(latent_shape=(1, 48, 3, 4, 4)), KEY)


def test_interventions_of_one_kind_compose(moe):
    sampler, cond, _ = moe
    one = jax.jit(T.capture(sampler, layers=[0], steps=[0]))(cond, KEY).trace.energy
    other = jax.jit(T.capture(sampler, layers=[1, 0], steps=[1, 2]))(cond, KEY).trace.energy
    both = jax.jit(T.capture(T.capture(sampler, [0], [0]), [1, 0], [1, 2]))(cond, KEY)
    first, second = both.trace.all("energy")  # plan order: outermost transform first
    assert relative_error(first, other) <= 1e-5 and relative_error(second, one) <= 1e-5
    with pytest.raises(ValueError, match=r"2 interventions record 'energy': use trace.all\('energy'\)"):
        _ = both.trace.energy

    # two swaps at different layers and steps, each with the run's own states: the plain run again
    captured = jax.jit(T.capture(sampler, layers=[0, 1], steps=[2, 3], what="hidden"))(cond, KEY)
    own = captured.trace.hidden  # [2 steps, 2 layers, 2B, L, D]
    f = T.swap_layer(T.swap_layer(sampler, 0, 2, own[0, 0]), 1, 3, own[1, 1])
    assert relative_error(jax.jit(f)(cond, KEY).latents, captured.latents) <= 1e-5
    # with other states each swap acts: the pair differs from either swap alone
    a, b = own[0, 0][::-1] + 1.0, own[1, 1][::-1] + 1.0
    pair = jax.jit(T.swap_layer(T.swap_layer(sampler, 0, 2, a), 1, 3, b))(cond, KEY).latents
    for alone in (T.swap_layer(sampler, 0, 2, a), T.swap_layer(sampler, 1, 3, b)):
        assert relative_error(pair, jax.jit(alone)(cond, KEY).latents) > 1e-3
    # at the same layer and step the inner swap acts last, so it wins
    same = jax.jit(T.swap_layer(T.swap_layer(sampler, 0, 2, a), 0, 2, b))(cond, KEY).latents
    assert relative_error(same, jax.jit(T.swap_layer(sampler, 0, 2, a))(cond, KEY).latents) <= 1e-5


def test_plan_applies_edits_before_reads(moe):
    sampler, cond, _ = moe
    source = jax.jit(T.capture(sampler, layers=[1], steps=[2], what="hidden"))(cond, KEY).trace.hidden[:, 0]
    source = source[:, ::-1] + 1.0
    # the capture sees the swapped stream whichever transform is outermost
    for f in (
        T.capture(T.swap_layer(sampler, 1, 2, source), [1], [2], what="hidden"),
        T.swap_layer(T.capture(sampler, [1], [2], what="hidden"), 1, 2, source),
    ):
        np.testing.assert_array_equal(jax.jit(f)(cond, KEY).trace.hidden[:, 0], source)
