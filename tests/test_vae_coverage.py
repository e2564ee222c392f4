"""Full-size VAE key coverage without weights: the real Wan2.1 and Wan2.2 VAEs on torch's meta device.

Diffusers `AutoencoderKLWan` is instantiated with each real config on the `meta` device (shapes only,
no memory). Its state-dict keys and shapes, as they are (Diffusers layout) and renamed to the official
`Wan2.x_VAE.pth` names (the test's own rename, `helpers.layouts.official_vae_key`), must pass our key
check against the parameter shapes of `jax.eval_shape` (`abstract_params`), key for key.
"""

from __future__ import annotations

import math

import jax
import pytest
from helpers.layouts import official_vae_key
from helpers.torch_refs import torch

from cosjax.models.vae import VAEConfig, abstract_params
from cosjax.weights.tensors import CheckpointError, torch_entries
from cosjax.weights.vae_keys import (
    WAN21_VAE,
    WAN22_VAE,
    check_keys,
    expected_keys,
    official_config,
    torch_shape,
)

# The Diffusers constructor arguments of the real VAEs: Wan2.1 is `AutoencoderKLWan()`'s defaults,
# Wan2.2 the architecture part of `vae22_diffusers_config` (convert_wan_to_diffusers.py; its latent
# statistics are compared through `WAN22_VAE` below).
REAL = {
    "wan2.1": ({}, WAN21_VAE, 126.9),
    "wan2.2": (
        dict(
            base_dim=160,
            decoder_base_dim=256,
            z_dim=48,
            is_residual=True,
            in_channels=12,
            out_channels=12,
            patch_size=2,
            scale_factor_temporal=4,
            scale_factor_spatial=16,
            latents_mean=list(WAN22_VAE.latents_mean),
            latents_std=list(WAN22_VAE.latents_std),
        ),
        WAN22_VAE,
        704.7,
    ),
}


def _meta_model(kwargs: dict):
    from diffusers import AutoencoderKLWan

    with torch.device("meta"):
        return AutoencoderKLWan(**kwargs)


@pytest.fixture(scope="module", params=list(REAL))
def real(request):
    """(name, our config, the meta model's state dict, expected parameter count in millions)."""
    kwargs, config, millions = REAL[request.param]
    model = _meta_model(kwargs)
    state = model.state_dict()
    assert all(t.is_meta for t in state.values())  # nothing allocated
    assert VAEConfig.from_diffusers(dict(model.config)) == config  # our constants = Diffusers' config
    return request.param, config, state, millions


@pytest.mark.parametrize("layout", ["diffusers", "official"])
def test_real_vae_keys_are_covered(real, layout):
    name, config, state, millions = real
    if layout == "official":
        state = {official_vae_key(k, config.num_res_blocks, config.is_residual): v for k, v in state.items()}
        assert official_config(torch_entries(state, name), name) == config  # the z_dim tells the model
    entries = torch_entries(state, f"meta:{name}")
    check_keys(config, entries, name, layout)  # raises on any missing / unexpected / mis-shaped key
    assert set(entries) == set(expected_keys(config, layout))
    total = sum(math.prod(s.shape) for s in jax.tree_util.tree_leaves(abstract_params(config)))
    assert total == sum(t.numel() for t in state.values())
    print(f"\n{name} {layout}: {len(entries)} keys, {total / 1e6:.2f} M parameters")
    assert abs(total / 1e6 - millions) < 0.1


def test_both_layouts_name_the_same_leaves(real):
    _, config, _, _ = real
    diffusers = expected_keys(config, "diffusers")
    official = expected_keys(config, "official")
    assert len(diffusers) == len(official)
    assert sorted(diffusers.values()) == sorted(official.values())


def test_the_other_vae_is_rejected(real):
    """Each real key set fails the other model's check (on keys or shapes), in both layouts."""
    name, config, state, _ = real
    other = WAN22_VAE if config == WAN21_VAE else WAN21_VAE
    with pytest.raises(CheckpointError):
        check_keys(other, torch_entries(state, name), name, "diffusers")
    renamed = {official_vae_key(k, config.num_res_blocks, config.is_residual): v for k, v in state.items()}
    with pytest.raises(CheckpointError):
        check_keys(other, torch_entries(renamed, name), name, "official")


# Official Wan2.1 keys and PyTorch shapes as published (wan22.md 6.2, from `wan/modules/vae2_1.py`).
WAN21_OFFICIAL_EXAMPLES = {
    "encoder.conv1.weight": (96, 3, 3, 3, 3),
    "encoder.downsamples.0.residual.0.gamma": (96, 1, 1, 1),
    "encoder.downsamples.3.shortcut.weight": (192, 96, 1, 1, 1),
    "encoder.downsamples.2.resample.1.weight": (96, 96, 3, 3),
    "encoder.downsamples.5.time_conv.weight": (192, 192, 3, 1, 1),
    "encoder.middle.1.norm.gamma": (384, 1, 1),
    "encoder.middle.1.to_qkv.weight": (1152, 384, 1, 1),
    "encoder.middle.1.proj.weight": (384, 384, 1, 1),
    "encoder.head.2.weight": (32, 384, 3, 3, 3),
    "conv1.weight": (32, 32, 1, 1, 1),
    "conv2.weight": (16, 16, 1, 1, 1),
    "decoder.conv1.weight": (384, 16, 3, 3, 3),
    "decoder.upsamples.3.resample.1.weight": (192, 384, 3, 3),
    "decoder.upsamples.3.time_conv.weight": (768, 384, 3, 1, 1),
    "decoder.upsamples.11.resample.1.weight": (96, 192, 3, 3),
    "decoder.head.2.weight": (3, 96, 3, 3, 3),
}


def test_published_official_wan21_keys():
    """Our official key map gives the published names and shapes, independently of Diffusers."""
    expected = expected_keys(WAN21_VAE, "official")
    for key, shape in WAN21_OFFICIAL_EXAMPLES.items():
        path, leaf_shape = expected[key]
        assert torch_shape(path, leaf_shape) == shape, key
