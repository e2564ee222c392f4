"""Pipeline: presets, input checks and conditioning, on a tiny converted two-expert I2V model."""

from __future__ import annotations

import logging

import imageio.v3 as iio
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers.fakes import PoolVAE

import cosjax as cj
from cosjax.geometry import latent_frames
from cosjax.pipeline import WAN_NEGATIVE_PROMPT, Pipeline


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    """A converted tiny two-expert I2V checkpoint."""
    from helpers.torch_refs import make_reference, save_official

    root = tmp_path_factory.mktemp("i2v")
    save_official(make_reference(in_channels=36, out_channels=16, seed=1), root / "src" / "high_noise_model")
    save_official(make_reference(in_channels=36, out_channels=16, seed=2), root / "src" / "low_noise_model")
    return cj.convert_checkpoint(root / "src", root / "ckpt", dtype="float32", progress=False)


@pytest.fixture(scope="module")
def pipe(ckpt):
    return Pipeline.from_pretrained(ckpt, preset="vbvr")


def test_presets(pipe, tmp_path):
    assert pipe.model.name == "tiny-i2v"
    s = pipe.settings
    assert (s.steps, s.shift, s.guide_scale, s.boundary, s.grid, s.solver) == (
        50,
        5.0,
        (5.0, 5.0),
        0.875,
        "diffsynth",
        "euler",
    )
    official = Pipeline(pipe.dit, pipe.model, cj.pipeline.sampler_settings(pipe.model, "official", 2))
    assert (official.settings.grid, official.settings.solver, official.settings.boundary) == (
        "official",
        "unipc",
        0.9,
    )
    sampler = pipe.sampler(steps=10)
    assert sampler.steps == 10 and [seg[0] for seg in sampler.segments] == ["high_noise", "low_noise"]
    with pytest.raises(ValueError, match="unknown sampling preset 'fast'; use one of official, vbvr"):
        Pipeline.from_pretrained(tmp_path, preset="fast")


def test_i2v_conditioning_layout_and_a_sampled_video(pipe, tmp_path):
    pipe = Pipeline(pipe.dit, pipe.model, pipe.settings, vae=PoolVAE())
    image = np.random.default_rng(0).integers(0, 256, (32, 48, 3), dtype=np.uint8)
    ctx = jax.random.normal(jax.random.key(0), (1, 7, 32))
    cond = pipe.condition(image=image, prompt_embeds=ctx, negative_embeds=jnp.zeros((1, 3, 32)), frames=9)
    assert cond.latent_shape == (1, 16, 3, 4, 6)
    assert cond.y.shape == (1, 20, 3, 4, 6)
    np.testing.assert_array_equal(cond.y[:, :4, 0], 1.0)  # mask: ones on latent frame 0 only
    np.testing.assert_array_equal(cond.y[:, :4, 1:], 0.0)
    encoded_first = PoolVAE().encode(
        jnp.asarray(image, jnp.float32).transpose(2, 0, 1)[None, :, None] / 127.5 - 1
    )
    np.testing.assert_allclose(cond.y[:, 4:, :1], encoded_first, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(cond.y[:, 4:, 1:], 0.0)  # the F-1 zero frames
    out = jax.jit(pipe.sampler(steps=4))(cond, jax.random.key(1))
    assert out.latents.shape == cond.latent_shape and bool(jnp.all(jnp.isfinite(out.latents)))

    video = jnp.tanh(jax.random.normal(jax.random.key(2), (1, 3, 9, 32, 48)))
    path = pipe.save_video(video, tmp_path / "clips" / "a.mp4", fps=8)
    frames = iio.imread(path)
    assert frames.shape == (9, 32, 48, 3)
    assert [p.name for p in path.parent.iterdir()] == ["a.mp4"]  # no temporary file left behind


def test_bad_inputs(pipe, caplog):
    image = np.zeros((32, 48, 3), np.uint8)
    ctx = jnp.ones((1, 4, 32))
    with pytest.raises(ValueError, match="frame count 10 is not of the form 4k \\+ 1"):
        pipe.condition(image=image, prompt_embeds=ctx, frames=10)
    official = Pipeline(pipe.dit, pipe.model, pipe.settings, preset="official")  # vbvr rounds sizes up
    with pytest.raises(ValueError, match="size 30x48 cannot be tiled: height must be a multiple of 16"):
        official.condition(image=np.zeros((30, 48, 3), np.uint8), prompt_embeds=ctx, frames=9)
    with pytest.raises(ValueError, match=r"image must be RGB \[H, W, 3\], got shape \(32, 48, 4\)"):
        pipe.condition(image=np.zeros((32, 48, 4), np.uint8), prompt_embeds=ctx, frames=9)
    with pytest.raises(ValueError, match="has no text encoder: pass prompt embeddings"):
        pipe.condition(image=image, prompt="solve the maze", frames=9)
    with pytest.raises(ValueError, match="an I2V model needs an image"):
        pipe.condition(prompt_embeds=ctx, negative_embeds=ctx, frames=9)
    with pytest.raises(ValueError, match="no VAE loaded"):
        pipe.condition(image=image, prompt_embeds=ctx, negative_embeds=ctx, frames=9)
    long = Pipeline(pipe.dit, pipe.model, pipe.settings, vae=PoolVAE())
    with caplog.at_level(logging.WARNING):
        cond = long.condition(
            image=image, prompt_embeds=jnp.ones((1, 600, 32)), negative_embeds=ctx, frames=9
        )
    assert cond.context.shape == (1, 512, 32) and "truncated to 512" in caplog.text
    assert latent_frames(81) == 21 and "JPEG" in WAN_NEGATIVE_PROMPT


def test_prompts_go_through_the_text_encoder(ckpt, tmp_path):
    from helpers.torch_refs import write_text_encoder

    repo = tmp_path / "repo"
    write_text_encoder(repo / "tokenizer", repo / "text_encoder", seed=0)
    loaded = Pipeline.from_pretrained(ckpt, preset="vbvr", text_encoder=repo, cache_dir=tmp_path / "cache")
    assert loaded.text_encoder is not None
    with_vae = Pipeline(
        loaded.dit, loaded.model, loaded.settings, vae=PoolVAE(), text_encoder=loaded.text_encoder
    )
    image = np.zeros((32, 48, 3), np.uint8)
    cond = with_vae.condition(image=image, prompt="draw the path", frames=9)
    np.testing.assert_array_equal(cond.context, loaded.text_encoder(["draw the path"]))
    np.testing.assert_array_equal(cond.negative, loaded.text_encoder([WAN_NEGATIVE_PROMPT]))
    assert cond.context.shape == (1, 512, 32) and float(jnp.abs(cond.context[0, 0]).sum()) > 0


def test_memory_check_before_compiling(pipe):
    plan = pipe.check_memory(frames=9, height=32, width=48, device_bytes=2**30)
    assert 0 < plan.total < 2**30
    fix = r"(?s)needs about [0-9.]+ GiB per device.*To fit, change one of:.*flash attention"
    with pytest.raises(ValueError, match=fix):
        pipe.check_memory(frames=81, height=720, width=1280, device_bytes=8 * 2**30)
