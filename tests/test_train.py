"""The pixel-space I2V toy trainer: the loss falls, resumption is exact, the export samples."""

from __future__ import annotations

import dataclasses
import os

import jax
import numpy as np
import pytest

from cosjax.toy.codec import decode_latents, encode_videos, from_model_space, i2v_condition, toy_conditioning
from cosjax.toy.config import toy_dit_config
from cosjax.toy.model_file import load_toy
from cosjax.toy.train import TrainConfig, batch_indices, export, restore_state, train

COLOURS = np.array([[230, 40, 40], [40, 200, 60], [50, 80, 230], [240, 220, 40]], np.uint8)


def moving_squares(n: int = 32, frames: int = 9, size: int = 32, square: int = 8, seed: int = 0):
    """A coloured square moving right 2 px per frame on a grey background; colour = prompt id.

    Returns (videos uint8 [n, frames, size, size, 3], first frames uint8 [n, size, size, 3],
    prompt ids int32 [n]).
    """
    rng = np.random.default_rng(seed)
    videos = np.full((n, frames, size, size, 3), 40, np.uint8)
    ids = (np.arange(n) % len(COLOURS)).astype(np.int32)
    for i in range(n):
        top = rng.integers(0, size - square + 1)
        left = rng.integers(0, size - square - 2 * (frames - 1) + 1)
        for f in range(frames):
            x = left + 2 * f
            videos[i, f, top : top + square, x : x + square] = COLOURS[ids[i]]
    return videos, videos[:, 0].copy(), ids


TINY = TrainConfig(
    model=toy_dit_config(dim=48, num_layers=2, num_heads=2, ffn_dim=96),  # head_dim 24: RoPE 8/8/8
    steps=40,
    batch_size=4,
    lr=2e-3,
    warmup=5,
    checkpoint_every=20,
    log_every=10,
)


@pytest.fixture(scope="module")
def data():
    return moving_squares()


@pytest.fixture(scope="module")
def full_run(data, tmp_path_factory):
    """An uninterrupted 40-step run of TINY (checkpoints kept: steps 20 and 40)."""
    workdir = tmp_path_factory.mktemp("full")
    return workdir, train(TINY, *data, workdir, progress=False)


def test_batch_order_is_a_function_of_seed_and_step():
    seen = np.concatenate([batch_indices(0, k, 10, 4) for k in range(5)])  # 2 epochs
    assert sorted(seen[:10]) == list(range(10)) and sorted(seen[10:20]) == list(range(10))
    np.testing.assert_array_equal(batch_indices(0, 3, 10, 4), seen[12:16])
    assert not np.array_equal(batch_indices(1, 0, 10, 4), batch_indices(0, 0, 10, 4))


def test_loss_falls(full_run):
    _, result = full_run
    losses = result.losses
    assert losses.shape == (40,) and np.all(np.isfinite(losses))
    first, last = losses[:5].mean(), losses[-5:].mean()
    print(f"\ntiny config: loss first5 {first:.4f} -> last5 {last:.4f}; {result.steps_per_sec:.2f} steps/s")
    print("loss every 5 steps:", [round(float(x), 3) for x in losses[::5]])
    assert last < 0.8 * first


def test_resume_reproduces_uninterrupted_run(data, full_run, tmp_path):
    full_dir, full = full_run
    first = train(TINY, *data, tmp_path, stop_at=10, progress=False)  # "preempted" at step 10
    assert first.first_step == 0 and first.losses.shape == (10,)
    resumed = train(TINY, *data, tmp_path, stop_at=20, progress=False)
    assert resumed.first_step == 10 and int(resumed.state.step) == 20
    np.testing.assert_allclose(resumed.losses, full.losses[10:20], rtol=1e-6, atol=1e-6)
    config, reference = restore_state(full_dir, step=20)  # the uninterrupted run at step 20
    assert config == dataclasses.replace(TINY, num_prompts=4)  # resolved from the prompt ids
    for a, b in zip(jax.tree.leaves(resumed.state), jax.tree.leaves(reference), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="different config"):
        train(dataclasses.replace(TINY, lr=1e-3), *data, tmp_path, progress=False)


def test_export_loads_and_samples(data, full_run, tmp_path):
    from cosjax import SamplerSettings, make_sampler

    workdir, result = full_run
    out = export(workdir, tmp_path / "toy")
    loaded, meta, table = load_toy(out)
    assert loaded.config == TINY.model and meta["space"] == TINY.space
    for a, b in zip(jax.tree.leaves(loaded.params), jax.tree.leaves(result.state.ema), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    with pytest.raises(FileExistsError):
        export(workdir, out)
    (out / "toy.safetensors").write_bytes(b"broken")
    with pytest.raises(Exception, match="(?i)header|safetensor|invalid|error"):
        load_toy(out)
    assert table.shape == (len(np.unique(data[2])), TINY.model.text_len, TINY.model.text_dim)

    videos, first_frames, ids = data
    b, frames = 2, videos.shape[1]
    cond = toy_conditioning(first_frames[:b], table[ids[:b]], frames)
    assert cond.y.shape == (b, 7, frames, 32, 32)
    settings = SamplerSettings(
        steps=4, shift=meta["sampling"]["shift"], guide_scale=(3.0, 3.0), grid="diffsynth"
    )
    sampler = make_sampler(loaded.config, loaded.experts, settings)
    latents = jax.jit(sampler)(cond, jax.random.key(0)).latents
    assert latents.shape == (b, 3, frames, 32, 32) and np.all(np.isfinite(np.asarray(latents)))
    assert from_model_space(latents).shape == (b, frames, 32, 32, 3)


def test_latent_spaces_round_trip(data):
    videos, first_frames, _ = data
    for space in ("delta", "pixel"):
        x = encode_videos(videos[:3], space)
        assert x.shape == (3, 3, 9, 32, 32)
        np.testing.assert_array_equal(decode_latents(x, first_frames[:3], space), videos[:3])
    delta = np.asarray(encode_videos(videos[:3], "delta"))
    assert np.all(delta[:, :, 0] == 0) and np.abs(delta).max() <= 1.0
    with pytest.raises(ValueError, match="space"):
        dataclasses.replace(TINY, space="latent")


def test_strided_scaled_latents_keep_keyframes_and_interpolate(data):
    """stride 4 keeps frames 0, 4, 8 (Wan's 9 -> 3 latent frames); decode restores the keyframes
    exactly and puts linear blends between them; scale only multiplies."""
    videos, first_frames, _ = data
    x = np.asarray(encode_videos(videos[:3], "delta", stride=4, scale=4.0))
    assert x.shape == (3, 3, 3, 32, 32)
    np.testing.assert_allclose(x, 4.0 * np.asarray(encode_videos(videos[:3, ::4], "delta")), atol=1e-6)
    out = decode_latents(x, first_frames[:3], "delta", stride=4, scale=4.0)
    assert out.shape == videos[:3].shape
    np.testing.assert_array_equal(out[:, ::4], videos[:3, ::4])
    blend = (videos[:3, 4].astype(np.float32) * 3 + videos[:3, 8]) / 4  # frame 5 = 3/4 of 4 + 1/4 of 8
    assert np.abs(out[:, 5].astype(np.float32) - blend).max() <= 1.0
    pooled = np.asarray(encode_videos(videos[:3], "delta", pool=2, stride=4))
    assert pooled.shape == (3, 3, 3, 16, 16)
    with pytest.raises(ValueError, match="4 k \\+ 1"):
        encode_videos(videos[:3, :8], "delta", stride=4)
    with pytest.raises(ValueError, match="stride"):
        dataclasses.replace(TINY, stride=0)


def test_i2v_condition_layout(data):
    videos, first_frames, _ = data
    y = np.asarray(i2v_condition(first_frames[:2], 9))
    np.testing.assert_array_equal(y[:, :4, 0], 1.0)
    np.testing.assert_array_equal(y[:, :, 1:], 0.0)
    np.testing.assert_allclose(y[:, 4:, 0], first_frames[:2].transpose(0, 3, 1, 2) / 127.5 - 1.0, atol=1e-6)


@pytest.mark.skipif(
    not os.environ.get("COSJAX_TRAIN_BENCH"), reason="~40 s on 2 CPU cores; set COSJAX_TRAIN_BENCH=1"
)
def test_realistic_toy_throughput(data, tmp_path):
    """Throughput of a realistic toy (20 steps); run with COSJAX_TRAIN_BENCH=1 pytest -s."""
    config = TrainConfig(
        model=toy_dit_config(dim=96, num_layers=4, num_heads=2),  # ffn 384, head_dim 48
        steps=20,
        batch_size=8,
        warmup=2,
        checkpoint_every=20,
    )
    result = train(config, *data, tmp_path, progress=False)
    assert np.all(np.isfinite(result.losses))
    print(f"\nrealistic toy (dim 96, 4 layers, batch 8, patch 1x4x4): {result.steps_per_sec:.2f} steps/s")


def test_change_weight_weighs_the_changed_elements(data):
    """With the head zeroed (v = 0) the loss is mean(w (eps - x0)^2), w = change_weight where x0 != 0."""
    from cosjax.models.dit import WanDiT
    from cosjax.toy.codec import prompt_embeddings
    from cosjax.toy.train import flow_matching_loss, init_state

    videos, first_frames, ids = data
    config = dataclasses.replace(TINY, stride=4, scale=4.0, change_weight=10.0, num_prompts=4)
    params = init_state(config).params  # head kernel zeroed, bias 0: v == 0
    context = prompt_embeddings(0, 4, config.model.text_len, config.model.text_dim)[ids[:4]]
    key = jax.random.key(3)
    loss = flow_matching_loss(
        params, WanDiT(config.model), config, key, videos[:4], first_frames[:4], context
    )
    x0 = np.asarray(encode_videos(videos[:4], "delta", stride=4, scale=4.0))
    eps = np.asarray(jax.random.normal(jax.random.split(key, 3)[0], x0.shape))
    w = np.where(x0 != 0, 10.0, 1.0)
    assert 0.01 < (x0 != 0).mean() < 0.5
    np.testing.assert_allclose(float(loss), np.mean(w * (eps - x0) ** 2), rtol=1e-5)


def test_final_change_weight_applies_to_the_last_steps_only(data):
    """change_weight_at switches to final_change_weight at step steps - final_steps, and the loss
    passed that weight equals mean(w (eps - x0)^2) with the final w; half-given settings are refused."""
    from cosjax.models.dit import WanDiT
    from cosjax.toy.codec import prompt_embeddings
    from cosjax.toy.train import TrainConfig, change_weight_at, flow_matching_loss, init_state

    config = dataclasses.replace(
        TINY,
        steps=50,
        stride=4,
        scale=4.0,
        change_weight=10.0,
        final_change_weight=1.0,
        final_steps=8,
        num_prompts=4,
    )
    weights = [float(change_weight_at(config, np.int32(k))) for k in (0, 41, 42, 49)]
    assert weights == [10.0, 10.0, 1.0, 1.0]
    assert float(change_weight_at(dataclasses.replace(TINY, change_weight=3.0), 49)) == 3.0
    videos, first_frames, ids = data
    params = init_state(config).params  # v == 0
    context = prompt_embeddings(0, 4, config.model.text_len, config.model.text_dim)[ids[:4]]
    key = jax.random.key(5)
    loss = flow_matching_loss(
        params,
        WanDiT(config.model),
        config,
        key,
        videos[:4],
        first_frames[:4],
        context,
        change_weight_at(config, 45),
    )
    x0 = np.asarray(encode_videos(videos[:4], "delta", stride=4, scale=4.0))
    eps = np.asarray(jax.random.normal(jax.random.split(key, 3)[0], x0.shape))
    np.testing.assert_allclose(float(loss), np.mean((eps - x0) ** 2), rtol=1e-5)
    with pytest.raises(ValueError, match="final_steps"):
        TrainConfig(model=TINY.model, steps=50, warmup=5, final_change_weight=1.0)
    with pytest.raises(ValueError, match="final_steps"):
        TrainConfig(model=TINY.model, steps=50, warmup=5, final_steps=60, final_change_weight=1.0)


def test_shipped_layout_trains(data, tmp_path):
    """The embedded model's layout (pool 2, stride 4, scale 4, changed elements x10, (1, 4, 4)
    patches: 3 x 4 x 4 = 48 tokens) on the moving squares: the loss falls within 80 steps."""
    config = dataclasses.replace(
        TINY,
        model=toy_dit_config(dim=48, num_layers=2, num_heads=2, ffn_dim=96, patch_size=(1, 4, 4)),
        steps=80,
        lr=3e-3,
        pool=2,
        stride=4,
        scale=4.0,
        change_weight=10.0,
        time_shift=4.0,
        checkpoint_every=80,
    )
    losses = train(config, *data, tmp_path, progress=False).losses
    assert np.all(np.isfinite(losses))
    assert losses[-10:].mean() < 0.8 * losses[:10].mean()
