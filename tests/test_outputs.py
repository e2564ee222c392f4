"""Outputs as the references write them: uint8 quantisation and mp4 quality per preset, and the
paper tool's frame-0 rule for TI2V x0-hat traces. The quantisation must equal torch's own ops
exactly (both are exact IEEE float32/bf16 arithmetic followed by truncation)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import cosjax as cj
from cosjax.outputs import scale_to_uint8, to_uint8, write_mp4
from cosjax.pipeline import Pipeline
from cosjax.sampling.sampler import Conditioning, SamplerSettings, make_sampler


def _video(seed=0, shape=(3, 5, 16, 24)):
    return np.random.default_rng(seed).uniform(-1.1, 1.1, shape).astype(np.float32)


def test_official_quantisation_equals_wan_save_video():
    torch = pytest.importorskip("torch")
    v = _video()
    # wan/utils/utils.py save_video: clamp, make_grid(normalize=True, value_range=(-1, 1)), * 255, uint8
    t = torch.from_numpy(v).clamp(-1, 1)
    t = t.sub_(-1).div_(max(1 - (-1), 1e-5))
    want = (t * 255).type(torch.uint8).numpy()
    np.testing.assert_array_equal(to_uint8(v, "official"), want)


def test_vbvr_quantisation_equals_diffsynth_in_bf16():
    torch = pytest.importorskip("torch")
    v = torch.from_numpy(_video(1)).to(torch.bfloat16).clamp_(-1, 1)  # the bf16 decoder output
    # DiffSynth vae_output_to_image: ((x - min) * (255 / (max - min))).clip(0, 255).to(uint8)
    want = ((v - (-1)) * (255 / (1 - (-1)))).clip(0, 255).to(torch.uint8).numpy()
    ours = to_uint8(v.float().numpy(), "vbvr")
    np.testing.assert_array_equal(ours, want)
    rounded = np.round((v.float().numpy() + 1) * 127.5).astype(np.uint8)  # cosjax's former rule
    differ = float(np.mean(rounded != ours))
    print(f"vbvr quantisation: {differ:.0%} of values differ from float32 rounding")
    assert differ > 0.2
    with pytest.raises(ValueError, match="unknown output preset 'fast'"):
        to_uint8(v.float().numpy(), "fast")


def test_save_video_quality_per_preset(tmp_path):
    import imageio.v3 as iio

    video = np.tanh(_video(2, (3, 9, 32, 48)) * 3)
    sizes = {}
    for preset in ("official", "vbvr"):
        pipe = Pipeline(None, None, None, preset=preset)
        path = pipe.save_video(video, tmp_path / f"{preset}.mp4", fps=8)
        assert iio.imread(path).shape == (9, 32, 48, 3)
        sizes[preset] = path.stat().st_size
    assert sizes["vbvr"] < sizes["official"]  # quality 5 (CRF 25) is coarser than quality 8


def test_write_mp4_is_atomic(tmp_path):
    h, w = 32, 48
    path = tmp_path / "In-Domain_50/task/00000.mp4"
    write_mp4(path, np.zeros((5, h, w, 3), np.uint8), 16, 5)
    before = path.read_bytes()

    def frames():
        yield from np.full((3, h, w, 3), 200, np.uint8)
        raise RuntimeError("generation crashed")

    with pytest.raises(RuntimeError, match="generation crashed"):
        write_mp4(path, frames(), 16, 5)
    with pytest.raises(ValueError, match="uint8"):
        write_mp4(path, np.zeros((5, h, w, 3), np.float32), 16, 5)
    with pytest.raises(ValueError, match="no frames"):
        write_mp4(path, np.zeros((0, h, w, 3), np.uint8), 16, 5)
    assert path.read_bytes() == before  # the old video is untouched
    assert sorted(p.name for p in path.parent.iterdir()) == ["00000.mp4"]  # no partial/temporary file
    with pytest.raises(RuntimeError):
        write_mp4(new := tmp_path / "x/00001.mp4", frames(), 16, 5)
    assert not new.exists() and list(new.parent.iterdir()) == []


def test_scale_to_uint8_maps_linearly_clips_and_rounds():
    x = np.array([-2.0, -1.0, 0.0, 1.0, 3.0])
    np.testing.assert_array_equal(scale_to_uint8(x), [0, 0, 128, 255, 255])
    np.testing.assert_array_equal(scale_to_uint8(np.array([0.0, 0.5, 1.0]), 0.0, 1.0), [0, 128, 255])
    with pytest.raises(ValueError):
        scale_to_uint8(x, 1.0, 1.0)


def test_trace_x0_first_frame_rule_on_ti2v():
    cfg = cj.get_preset("tiny-ti2v").dit
    experts = {"dit": cj.init_params(cfg, jax.random.key(0))}
    sampler = make_sampler(
        cfg, experts, SamplerSettings(3, 5.0, (5.0, 5.0), grid="diffsynth", solver="euler")
    )
    shape = (1, cfg.out_dim, 2, 4, 4)
    first = jax.random.normal(jax.random.key(1), (1, cfg.out_dim, 1, 4, 4))
    cond = Conditioning(
        context=jax.random.normal(jax.random.key(2), (1, 5, cfg.text_dim)),
        first_frame=first,
        latent_shape=shape,
    )
    model = jax.jit(cj.trace_x0(sampler))(cond, jax.random.key(3))
    clean = jax.jit(cj.trace_x0(sampler, first_frame="clean"))(cond, jax.random.key(3))
    assert model.trace.x0.shape == clean.trace.x0.shape == (3, *shape)
    for s in range(3):  # frame 0 is the image latent at every step; the other frames are unchanged
        np.testing.assert_array_equal(clean.trace.x0[s, :, :, :1], first)
    assert float(jnp.abs(model.trace.x0[:, :, :, :1] - first).max()) > 1e-3
    np.testing.assert_array_equal(clean.trace.x0[:, :, :, 1:], model.trace.x0[:, :, :, 1:])
    np.testing.assert_array_equal(clean.latents, model.latents)
    with pytest.raises(ValueError, match="first_frame='image'; use one of model, clean"):
        cj.trace_x0(sampler, first_frame="image")
