"""Every preset is complete and self-consistent, and every released model size has its key coverage.

A new model size is one `ModelPreset` in `cosjax/configs.py` plus its row in the key-coverage test
(`tests/test_key_coverage.py`, and `tests/test_vae_coverage.py` for a new VAE): these tests fail
until both exist. Torch-free: the coverage files are read as text, not imported.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import cosjax as cj
from cosjax import configs, geometry
from cosjax.configs import PRESETS, SAMPLING_PRESETS, TEXT_ENCODERS, VAE_FILES, VAE_PRESETS

TESTS = Path(__file__).parent
# released checkpoints; the tiny presets have random weights and no text encoder
RELEASED = [name for name, p in PRESETS.items() if p.text_encoder != "none"]


@pytest.mark.parametrize("name", PRESETS)
def test_every_preset_is_complete(name):
    p = cj.get_preset(name)
    assert p.name == name and isinstance(p, cj.ModelPreset) and isinstance(p.dit, cj.DiTConfig)
    assert p.model_type in ("t2v", "i2v", "ti2v") and p.model_type == p.dit.model_type
    # channels follow from the model type and the VAE, never the other way round
    vae = p.vae_config
    assert p.vae in VAE_PRESETS and p.vae in VAE_FILES and vae.z_dim == p.dit.out_dim == p.vae_z_dim
    in_dim = {"t2v": vae.z_dim, "ti2v": vae.z_dim, "i2v": 2 * vae.z_dim + 4}[p.model_type]
    assert p.dit.in_dim == in_dim
    assert p.vae_stride == (vae.scale_factor_temporal, vae.scale_factor_spatial, vae.scale_factor_spatial)
    assert len(vae.latents_mean) == len(vae.latents_std) == vae.z_dim
    assert p.text_encoder in TEXT_ENCODERS
    assert TEXT_ENCODERS[p.text_encoder] in (None, p.dit.text_dim)
    assert isinstance(p.fps, int) and p.fps > 0 and p.fps == p.sampling.fps
    # MoE: two experts need a boundary in (0, 1); one expert has none
    assert p.experts in (("high_noise", "low_noise"), ("dit",))
    if len(p.experts) == 2:
        assert p.boundary is not None and 0 < p.boundary < 1
        assert configs.mixture_boundary(p.dit) == p.boundary
    else:
        assert p.boundary is None
    # the default video tiles: 4k+1 frames, a size that VAE stride x patch divides
    width, height = p.sampling.size
    grid = geometry.latent_grid(p.sampling.frame_num, height, width, p.vae_stride)
    assert geometry.num_tokens(grid, p.dit.patch_size) > 0
    assert configs.preset_for(p.dit) is p


@pytest.mark.parametrize("name", RELEASED)
def test_every_released_model_has_its_key_coverage(name):
    p = PRESETS[name]
    assert TEXT_ENCODERS[p.text_encoder] == p.dit.text_dim
    assert f'"{name}"' in (TESTS / "test_key_coverage.py").read_text(), (
        f"add {name!r} to the REAL presets of tests/test_key_coverage.py"
    )
    assert f'"{p.vae}"' in (TESTS / "test_vae_coverage.py").read_text(), (
        f"add the {p.vae!r} VAE to tests/test_vae_coverage.py"
    )


def test_official_values():
    """Spot checks against the official configs (`wan22.md` section 1)."""
    assert PRESETS["wan2.2-ti2v-5b"].fps == 24 and PRESETS["wan2.2-ti2v-5b"].vae_stride == (4, 16, 16)
    assert PRESETS["wan2.2-i2v-a14b"].boundary == 0.9 and PRESETS["wan2.2-t2v-a14b"].boundary == 0.875
    assert PRESETS["wan2.1-t2v-1.3b"].vae == "wan2.1" and PRESETS["wan2.2-ti2v-5b"].vae == "wan2.2"
    assert VAE_PRESETS["wan2.1"].z_dim == 16 and VAE_PRESETS["wan2.2"].z_dim == 48
    assert VAE_FILES == {"wan2.1": "Wan2.1_VAE.pth", "wan2.2": "Wan2.2_VAE.pth"}


def test_lookups_name_the_known_entries():
    with pytest.raises(ValueError, match="unknown model preset 'x'; known presets: wan2.2-i2v-a14b"):
        cj.get_preset("x")
    with pytest.raises(ValueError, match="unknown VAE preset 'x'; known VAEs: wan2.1, wan2.2"):
        configs.get_vae("x")
    with pytest.raises(ValueError, match="unknown sampling preset 'x'; use one of official, vbvr"):
        configs.get_sampling_preset("x")


def test_sampling_presets_are_data():
    a14b = PRESETS["wan2.2-t2v-a14b"]
    official = SAMPLING_PRESETS["official"].resolve(a14b, 2)
    assert official == dict(
        steps=40, shift=12.0, guide_scale=(3.0, 4.0), boundary=0.875, grid="official", solver="unipc",
        rounding=None,
    )  # fmt: skip
    vbvr = SAMPLING_PRESETS["vbvr"].resolve(PRESETS["wan2.2-i2v-a14b"], 2)
    assert vbvr == dict(
        steps=50, shift=5.0, guide_scale=(5.0, 5.0), boundary=0.875, grid="diffsynth", solver="euler",
        rounding="diffsynth",
    )  # fmt: skip
    assert SAMPLING_PRESETS["vbvr"].resolve(PRESETS["wan2.2-ti2v-5b"], 1)["boundary"] is None
    assert {n: p.video_quality for n, p in SAMPLING_PRESETS.items()} == {"official": 8, "vbvr": 5}


def test_unnamed_architectures_derive_from_the_closest_named_model():
    import dataclasses

    t2v = dataclasses.replace(PRESETS["wan2.1-t2v-1.3b"].dit, num_layers=3)
    assert configs.preset_for(t2v, 1).name == "custom-t2v"
    assert configs.preset_for(t2v, 1).sampling == PRESETS["wan2.1-t2v-1.3b"].sampling
    assert configs.preset_for(t2v, 2).sampling == PRESETS["wan2.2-t2v-a14b"].sampling
    ti2v = dataclasses.replace(PRESETS["wan2.2-ti2v-5b"].dit, num_layers=3)
    assert configs.preset_for(ti2v).vae == "wan2.2" and configs.preset_for(ti2v).fps == 24


def test_geometry():
    assert geometry.latent_frames(81) == 21 and geometry.pixel_frames(21) == 81
    assert [geometry.round_up_frames(n) for n in (1, 2, 5, 6, 80, 81)] == [1, 5, 5, 9, 81, 81]
    assert geometry.latent_grid(121, 704, 1280, (4, 16, 16)) == (31, 44, 80)
    assert geometry.num_tokens((1, 48, 31, 44, 80), (1, 2, 2)) == 31 * 22 * 40
    assert geometry.latent_size(48, 64, (4, 8, 8), (1, 2, 2)) == (6, 8)
    assert (geometry.tokens_per_shard(10, 4), geometry.padded_tokens(10, 4)) == (3, 12)
    for bad in (0, 4, 80):
        with pytest.raises(ValueError, match=f"frame count {bad} is not of the form 4k \\+ 1"):
            geometry.latent_frames(bad)
    with pytest.raises(ValueError, match="size 30x48 cannot be tiled: height must be a multiple of 16"):
        geometry.latent_size(30, 48, (8, 8), (2, 2))
    with pytest.raises(ValueError, match="not divisible by the patch size"):
        geometry.token_grid((3, 5, 4), (1, 2, 2))
