"""The vbvr preset in bfloat16 against a DiffSynth-numerics reference loop, and DiffSynth's noise.

The reference loop below is DiffSynth's `WanVideoPipeline.__call__` denoising loop written out on
torch bf16 tensors (the same rounding points: bf16 noise and latents, the model-input timestep cast
to bf16, bf16 model outputs, the guidance combination and the Euler step in bf16 arithmetic, the
float32 `FlowMatchScheduler("Wan")` sigmas), around tiny random Diffusers DiTs cast to bf16.

bf16 sampling is chaotic at the rounding scale, so the tolerance is measured, not assumed: the floor
is the distance between two valid implementations of that same loop (torch's SDPA kernel against
the plain-math attention), ~1.2e-2 relative on the final latents. cosjax must end within 1.2x of
that floor and every step's x0-hat within 5e-2; cosjax without the rounding points ends ~3e-2 away
(x0-hat 0.4), which the same bounds reject.
"""

from __future__ import annotations

import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers.numerics import relative_error
from helpers.torch_refs import make_reference, save_official, torch

import cosjax as cj
from cosjax.pipeline import VBVR_SEED, Pipeline
from cosjax.sampling.noise import reference_noise

STEPS, SHIFT, SCALE, BOUNDARY = 50, 5.0, 5.0, 0.875  # the vbvr preset
SHAPE = (1, 16, 3, 4, 6)
FLOOR_FACTOR, X0_TOL = 1.2, 5e-2


class ZeroVAE:
    """Stands in for the VAE where the image latent is replaced (the conditioning is set directly)."""

    def encode(self, video):
        return jnp.zeros((1, 16, *SHAPE[2:]))


def _experts():
    return [make_reference(in_channels=36, out_channels=16, seed=s) for s in (1, 2)]


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    root = tmp_path_factory.mktemp("refnum")
    high, low = _experts()
    save_official(high, root / "src" / "high_noise_model")
    save_official(low, root / "src" / "low_noise_model")
    return cj.convert_checkpoint(root / "src", root / "ckpt", dtype="bfloat16", progress=False)


def _inputs():
    gen = torch.Generator().manual_seed(0)
    ctx = torch.zeros(1, 512, 32)
    ctx[:, :7] = torch.randn(1, 7, 32, generator=gen)
    neg = torch.zeros(1, 512, 32)
    neg[:, :3] = torch.randn(1, 3, 32, generator=gen)
    y = torch.randn(1, 20, *SHAPE[2:], generator=gen)
    return ctx, neg, y


def _diffsynth_loop(backend: str, noise, ctx, neg, y):
    """DiffSynth's loop in bf16; returns float32 final latents and x0-hat [STEPS, ...] per step."""
    bf16 = torch.bfloat16
    high, low = (m.to(bf16) for m in _experts())
    for m in (high, low):
        m.set_attention_backend(backend)
    sigmas = torch.linspace(1, 0, STEPS + 1)[:-1]
    sigmas = SHIFT * sigmas / (1 + (SHIFT - 1) * sigmas)
    latents, y, ctx, neg = (a.to(bf16) for a in (noise, y, ctx, neg))
    x0 = []
    with torch.no_grad():
        for i, t in enumerate(sigmas * 1000):
            model = high if t.item() >= BOUNDARY * 1000 else low
            timestep = t.unsqueeze(0).to(bf16)
            inp = torch.cat([latents, y], dim=1)
            posi, nega = (model(inp, timestep, c).sample for c in (ctx, neg))
            v = nega + SCALE * (posi - nega)
            x0.append((latents.float() - sigmas[i] * v.float()).numpy())
            sigma_next = sigmas[i + 1] if i + 1 < STEPS else 0
            latents = latents + v * (sigma_next - sigmas[i])
    return latents.float().numpy(), np.stack(x0)


def test_vbvr_bf16_reproduces_the_diffsynth_loop(repo):
    ctx, neg, y = _inputs()
    pipe = Pipeline.from_pretrained(repo, preset="vbvr")
    assert pipe.dit.dtype == jnp.bfloat16 and pipe.settings.rounding == "diffsynth"
    pipe.vae = ZeroVAE()
    cond = pipe.condition(
        image=np.zeros((32, 48, 3), np.uint8),
        prompt_embeds=jnp.asarray(ctx[:, :7].numpy()),
        negative_embeds=jnp.asarray(neg[:, :3].numpy()),
        frames=9,
        height=32,
        width=48,
        noise="reference",
    ).replace(y=jnp.asarray(y.numpy()))  # the image latent itself is not under test here
    noise = torch.from_numpy(np.array(cond.noise))
    ref, ref_x0 = _diffsynth_loop("native", noise, ctx, neg, y)
    other, _ = _diffsynth_loop("_native_math", noise, ctx, neg, y)
    floor = relative_error(other, ref)
    assert 3e-3 < floor < 5e-2, floor  # two valid bf16 implementations really differ

    def ours(rounding):
        out = jax.jit(cj.trace_x0(pipe.sampler(rounding=rounding)))(cond, jax.random.key(0))
        x0 = np.asarray(out.trace.x0[:, 0])
        return relative_error(out.latents, ref), [relative_error(x0[i], ref_x0[i, 0]) for i in range(STEPS)]

    final, x0_errs = ours("diffsynth")
    before, before_x0 = ours(None)
    print(
        f"floor {floor:.2e}; vbvr bf16 final {final:.2e} ({final / floor:.2f}x floor), max x0-hat "
        f"{max(x0_errs):.2e} at step {int(np.argmax(x0_errs))}; without rounding points: final "
        f"{before:.2e}, max x0-hat {max(before_x0):.2e} at step {int(np.argmax(before_x0))}"
    )
    assert final <= FLOOR_FACTOR * floor
    assert max(x0_errs) <= X0_TOL
    assert before > FLOOR_FACTOR * floor and max(before_x0) > X0_TOL  # the bounds can fail


def test_reference_rounding_of_the_timestep_and_float32_stays_exact(repo, tmp_path):
    from cosjax.sampling.sampler import _model_timesteps
    from cosjax.sampling.schedules import make_schedule

    timesteps = make_schedule("diffsynth", STEPS, SHIFT).timesteps
    rounded, freq = _model_timesteps(timesteps, 32, reference=True)
    i = int(np.argmin(np.abs(timesteps - 809.9)))
    assert timesteps[i] == pytest.approx(809.86, abs=0.01) and rounded[i] == 808.0  # bf16: 8 bits
    exact, exact_freq = _model_timesteps(timesteps, 32, reference=False)
    np.testing.assert_array_equal(exact, timesteps)
    assert np.abs(freq - exact_freq).max() > 1e-3  # the sinusoid follows the rounded t

    # float32: rounding="diffsynth" is a no-op
    pipe = Pipeline.from_pretrained(repo, preset="vbvr", dtype="float32")
    ctx, neg, y = _inputs()
    cond = cj.Conditioning(
        context=jnp.asarray(ctx[:, :7].numpy()),
        negative=jnp.asarray(neg[:, :3].numpy()),
        y=jnp.asarray(y.numpy()),
        latent_shape=SHAPE,
    )
    a = jax.jit(pipe.sampler(steps=3))(cond, jax.random.key(3)).latents
    b = jax.jit(pipe.sampler(steps=3, rounding=None))(cond, jax.random.key(3)).latents
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    with pytest.raises(ValueError, match="solver 'unipc' has no DiffSynth counterpart"):
        Pipeline.from_pretrained(repo, preset="vbvr").sampler(solver="unipc")


def test_reference_noise_is_torchs_cpu_generator(repo, monkeypatch):
    pipe = Pipeline.from_pretrained(repo, preset="vbvr")
    kw = dict(prompt_embeds=jnp.ones((1, 4, 32)), cfg=False, frames=9, height=32, width=48)
    pipe.vae = ZeroVAE()
    cond = pipe.condition(image=np.zeros((32, 48, 3), np.uint8), noise="reference", **kw)
    want = torch.randn(SHAPE, generator=torch.Generator("cpu").manual_seed(VBVR_SEED), dtype=torch.float32)
    np.testing.assert_array_equal(np.asarray(cond.noise), want.numpy())
    other = pipe.condition(image=np.zeros((32, 48, 3), np.uint8), noise="reference", seed=7, **kw)
    assert not np.array_equal(np.asarray(other.noise), want.numpy())
    assert pipe.condition(image=np.zeros((32, 48, 3), np.uint8), **kw).noise is None
    with pytest.raises(ValueError, match="unknown noise source 'numpy'"):
        pipe.condition(image=np.zeros((32, 48, 3), np.uint8), noise="numpy", **kw)
    monkeypatch.setitem(sys.modules, "torch", None)  # as without torch installed
    with pytest.raises(ImportError, match="install it \\(pip install torch"):
        reference_noise(SHAPE, 1)


def test_experiments_start_every_case_from_the_reference_noise():
    """`noise=reference` in an experiment config: each case starts from DiffSynth's latents for the
    config's seed (VBVR's scripts use seed 1 for every sample)."""
    from types import SimpleNamespace

    from experiments import common

    class Subject:
        def condition(self, cases, settings):
            return cj.Conditioning(
                context=jnp.zeros((len(cases), 1, 32)), latent_shape=(len(cases), *SHAPE[1:])
            )

    config = SimpleNamespace(noise="reference", seed=VBVR_SEED)
    setup = SimpleNamespace(subject=Subject(), settings=None, config=config, group=SimpleNamespace(mesh=None))
    cases = [SimpleNamespace(id="a"), SimpleNamespace(id="b")]
    cond = common.condition(setup, cases)
    want = torch.randn(SHAPE, generator=torch.Generator("cpu").manual_seed(1), dtype=torch.float32).numpy()
    np.testing.assert_array_equal(np.asarray(cond.noise), np.concatenate([want, want]))
    assert common.BaseConfig().noise == "jax" and common.BaseConfig().seed == VBVR_SEED
    config.noise = "jax"
    assert not np.array_equal(np.asarray(common.condition(setup, cases).noise)[:1], want)
    config.noise = "torch"
    with pytest.raises(ValueError, match="config noise='torch': use 'jax' or 'reference'"):
        common.condition(setup, cases)
