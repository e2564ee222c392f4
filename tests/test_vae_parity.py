"""Parity of our Wan VAEs with Diffusers `AutoencoderKLWan` on tiny random models, and loader errors.

Normalisation compared is the Diffusers pipelines': encode -> (mode() - latents_mean) * (1 / latents_std)
(`pipeline_wan_i2v.prepare_latents`), decode input latents / (1 / latents_std) + latents_mean
(`pipeline_wan.__call__`); `cosjax.models.vae.encode` / `decode` apply exactly these.
"""

from __future__ import annotations

import json
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from conftest import relative_error
from safetensors.torch import load_file, save_file

from cosjax.models import vae
from cosjax.weights.safetensors_io import CheckpointError
from cosjax.weights.vae_keys import load_vae_diffusers

TOL = 1e-4
Z = 4
VARIANTS = {
    "wan2.1": dict(base_dim=8, dim_mult=[1, 2, 2, 2]),
    # Wan2.2: residual blocks, 2x2 patchify, a decoder wider than the encoder
    "wan2.2": dict(
        base_dim=8,
        decoder_base_dim=12,
        dim_mult=[1, 2, 2, 2],
        is_residual=True,
        patch_size=2,
        in_channels=12,
        out_channels=12,
        scale_factor_spatial=16,
    ),
}
# (frames, batch): 1, 5 and 9 frames exercise the first chunk alone, one and two scan steps
CASES = [(1, 1), (5, 2), (9, 1)]
HEIGHT, WIDTH = 32, 48


def make_diffusers_vae(variant: str, seed: int = 0):
    """A tiny `AutoencoderKLWan` with non-zero random weights and random latent statistics (float32)."""
    from diffusers import AutoencoderKLWan

    gen = torch.Generator().manual_seed(seed)
    model = AutoencoderKLWan(
        z_dim=Z,
        num_res_blocks=1,
        temperal_downsample=[False, True, True],
        latents_mean=(0.5 * torch.randn(Z, generator=gen)).tolist(),
        latents_std=(0.5 + torch.rand(Z, generator=gen)).tolist(),
        **VARIANTS[variant],
    ).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            if "gamma" in name:  # norms around 1
                p.copy_(1.0 + 0.2 * noise)
            elif name.startswith("decoder.conv_out"):  # keep most output pixels inside the clamp
                p.copy_(0.04 * noise)
            else:
                p.copy_(0.2 * noise)
    return model


@pytest.fixture(scope="module", params=list(VARIANTS))
def pair(request, tmp_path_factory):
    """(Diffusers model, our config, our params) loaded through `save_pretrained` + our loader."""
    model = make_diffusers_vae(request.param)
    folder = tmp_path_factory.mktemp(request.param.replace(".", "")) / "vae"
    model.save_pretrained(folder)
    config, params = load_vae_diffusers(folder)
    return request.param, model, config, params


def _torch_stats(model):
    mean = torch.tensor(model.config.latents_mean).view(1, Z, 1, 1, 1)
    inv_std = 1.0 / torch.tensor(model.config.latents_std).view(1, Z, 1, 1, 1)
    return mean, inv_std


@pytest.mark.parametrize("frames,batch", CASES)
def test_encode_parity(pair, frames, batch):
    name, model, config, params = pair
    gen = torch.Generator().manual_seed(frames)
    video = torch.rand(batch, 3, frames, HEIGHT, WIDTH, generator=gen) * 2 - 1
    mean, inv_std = _torch_stats(model)
    with torch.no_grad():
        ref = ((model.encode(video).latent_dist.mode() - mean) * inv_std).numpy()
    ours = np.asarray(vae.encode(params, jnp.asarray(video.numpy()), config))
    assert ours.shape == ref.shape == vae.latent_shape(video.shape, config)
    err = relative_error(ours, ref)
    print(f"\n{name} encode F={frames} B={batch} {ours.shape}: rel err {err:.2e}")
    assert err <= TOL


@pytest.mark.parametrize("frames,batch", CASES)
def test_decode_parity(pair, frames, batch):
    name, model, config, params = pair
    gen = torch.Generator().manual_seed(100 + frames)
    s = config.scale_factor_spatial
    latents = torch.randn(batch, Z, (frames - 1) // 4 + 1, HEIGHT // s, WIDTH // s, generator=gen)
    mean, inv_std = _torch_stats(model)
    with torch.no_grad():
        ref = model.decode(latents / inv_std + mean).sample.numpy()
    ours = np.asarray(vae.decode(params, jnp.asarray(latents.numpy()), config))
    assert ours.shape == ref.shape == (batch, 3, frames, HEIGHT, WIDTH)
    assert np.abs(ours).max() <= 1.0
    clamped = float(np.mean(np.abs(ref) >= 1.0))
    assert clamped < 0.2, "the test model saturates; parity would say little"
    err = relative_error(ours, ref)
    print(f"\n{name} decode F={frames} B={batch} {ours.shape}: rel err {err:.2e} ({clamped:.1%} clamped)")
    assert err <= TOL


def test_bad_video_shapes_are_rejected(pair):
    _, _, config, params = pair
    with pytest.raises(ValueError, match=r"4k\+1"):
        vae.encode(params, jnp.zeros((1, 3, 4, HEIGHT, WIDTH)), config)
    with pytest.raises(ValueError, match="multiples of"):
        vae.encode(params, jnp.zeros((1, 3, 1, HEIGHT + 4, WIDTH)), config)
    with pytest.raises(ValueError, match="video must be"):
        vae.encode(params, jnp.zeros((1, 4, 1, HEIGHT, WIDTH)), config)
    with pytest.raises(ValueError, match="latents must be"):
        vae.decode(params, jnp.zeros((1, Z + 1, 1, 2, 3)), config)


def test_decode_memory_does_not_grow_with_activations():
    """Compiled decode's scratch memory grows with the frame count by at most ~2x the output video.

    A decoder that kept full-resolution activations for every frame would grow by many times the
    (3-channel) output per frame; the scan over latent frames keeps only one chunk's.
    """
    config = vae.VAEConfig(base_dim=8, z_dim=Z, dim_mult=(1, 2, 2, 2), num_res_blocks=1,
                           latents_mean=(0.0,) * Z, latents_std=(1.0,) * Z)  # fmt: skip
    params = vae.abstract_params(config)

    def scratch(t):
        z = jax.ShapeDtypeStruct((1, Z, t, 8, 8), jnp.float32)
        return vae.decode.lower(params, z, config).compile().memory_analysis().temp_size_in_bytes

    out_growth = 3 * 4 * (7 - 3) * 64 * 64 * 4  # bytes of output added from 3 to 7 latent frames
    growth = scratch(7) - scratch(3)
    print(f"\ndecode scratch growth {growth / 2**10:.0f} KiB for {out_growth / 2**10:.0f} KiB more output")
    assert growth <= 2 * out_growth


def _rewrite(src, dst, edit):
    """Copies the Diffusers VAE folder `src` to `dst` with its state dict passed through `edit`."""
    shutil.copytree(src, dst)
    path = dst / "diffusion_pytorch_model.safetensors"
    state = load_file(str(path))
    edit(state)
    save_file(state, str(path))
    return dst


@pytest.fixture(scope="module")
def saved21(tmp_path_factory):
    folder = tmp_path_factory.mktemp("saved21") / "vae"
    make_diffusers_vae("wan2.1").save_pretrained(folder)
    return folder


def test_missing_key(saved21, tmp_path):
    key = "decoder.up_blocks.1.resnets.0.conv_shortcut.weight"
    bad = _rewrite(saved21, tmp_path / "vae", lambda s: s.pop(key))
    with pytest.raises(CheckpointError, match=r"missing.*" + key.replace(".", r"\.")):
        load_vae_diffusers(bad)


def test_misshaped_key(saved21, tmp_path):
    key = "encoder.down_blocks.3.time_conv.weight"

    def edit(state):
        state[key] = torch.zeros(16, 16, 3, 3, 1)

    bad = _rewrite(saved21, tmp_path / "vae", edit)
    with pytest.raises(CheckpointError, match=key.replace(".", r"\.")) as info:
        load_vae_diffusers(bad)
    assert "diffusion_pytorch_model.safetensors" in str(info.value)
    assert "(16, 16, 3, 1, 1)" in str(info.value)


def test_unexpected_key(saved21, tmp_path):
    bad = _rewrite(saved21, tmp_path / "vae", lambda s: s.update({"encoder.extra.weight": torch.zeros(2)}))
    with pytest.raises(CheckpointError, match=r"unexpected.*encoder\.extra\.weight"):
        load_vae_diffusers(bad)


def test_config_errors(saved21, tmp_path):
    folder = shutil.copytree(saved21, tmp_path / "vae")
    raw = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(dict(raw, some_new_option=1)))
    with pytest.raises(CheckpointError, match="some_new_option"):
        load_vae_diffusers(folder)
    (folder / "config.json").unlink()
    with pytest.raises(CheckpointError, match="config.json"):
        load_vae_diffusers(folder)
    # an explicit config that does not fit the weights is caught by the shape check
    config = vae.VAEConfig.from_diffusers(dict(raw, z_dim=8, latents_mean=[0.0] * 8, latents_std=[1.0] * 8))
    with pytest.raises(CheckpointError, match="shape"):
        load_vae_diffusers(folder, config)
