"""Parity of our Wan VAEs with Diffusers `AutoencoderKLWan` on tiny random models, and loader errors.

Normalisation compared is the Diffusers pipelines': encode -> (mode() - latents_mean) * (1 / latents_std)
(`pipeline_wan_i2v.prepare_latents`), decode input latents / (1 / latents_std) + latents_mean
(`pipeline_wan.__call__`); `cosjax.models.vae.encode` / `decode` apply exactly these.
"""

from __future__ import annotations

import json
import re
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers.layouts import official_vae_key
from helpers.numerics import relative_error
from helpers.torch_refs import save_official_vae, torch
from safetensors.torch import load_file, save_file

from cosjax.models import vae
from cosjax.weights.read import load_vae, load_vae_diffusers, load_vae_official
from cosjax.weights.tensors import CheckpointError, torch_entries
from cosjax.weights.vae_keys import WAN21_VAE, WAN22_VAE, official_config

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


# ----------------------------------------------------------------------------------------------
# Official `.pth` layout (the test suite's own rename: `helpers.layouts.official_vae_key`).


def test_official_rename_matches_published_examples():
    """Spot checks of the test's own rename against keys listed in wan22.md 6.2 / 6.3 (2 res blocks)."""
    examples21 = {
        "encoder.down_blocks.2.resample.1.weight": "encoder.downsamples.2.resample.1.weight",
        "encoder.down_blocks.3.conv_shortcut.weight": "encoder.downsamples.3.shortcut.weight",
        "encoder.mid_block.attentions.0.norm.gamma": "encoder.middle.1.norm.gamma",
        "encoder.norm_out.gamma": "encoder.head.0.gamma",
        "decoder.up_blocks.0.upsamplers.0.time_conv.weight": "decoder.upsamples.3.time_conv.weight",
        "decoder.up_blocks.1.resnets.0.conv_shortcut.bias": "decoder.upsamples.4.shortcut.bias",
        "decoder.up_blocks.2.upsamplers.0.resample.1.weight": "decoder.upsamples.11.resample.1.weight",
        "decoder.up_blocks.3.resnets.2.norm2.gamma": "decoder.upsamples.14.residual.3.gamma",
        "decoder.mid_block.resnets.1.conv2.bias": "decoder.middle.2.residual.6.bias",
        "quant_conv.weight": "conv1.weight",
        "post_quant_conv.bias": "conv2.bias",
        "decoder.conv_in.weight": "decoder.conv1.weight",
    }
    for diffusers, official in examples21.items():
        assert official_vae_key(diffusers, 2, False) == official
    examples22 = [  # (Diffusers, official)
        (
            "encoder.down_blocks.1.resnets.0.conv1.weight",
            "encoder.downsamples.1.downsamples.0.residual.2.weight",
        ),
        (
            "encoder.down_blocks.1.downsampler.time_conv.bias",
            "encoder.downsamples.1.downsamples.2.time_conv.bias",
        ),
        (
            "decoder.up_blocks.0.upsampler.resample.1.weight",
            "decoder.upsamples.0.upsamples.3.resample.1.weight",
        ),
        (
            "decoder.up_blocks.2.resnets.0.conv_shortcut.weight",
            "decoder.upsamples.2.upsamples.0.shortcut.weight",
        ),
        ("decoder.conv_out.weight", "decoder.head.2.weight"),
    ]
    for diffusers, official in examples22:
        assert official_vae_key(diffusers, 2, True) == official


@pytest.fixture(scope="module", params=list(VARIANTS))
def official_pair(request, tmp_path_factory):
    """(our config, params via the Diffusers loader, path of the same weights as an official .pth)."""
    model = make_diffusers_vae(request.param, seed=3)
    root = tmp_path_factory.mktemp("official" + request.param.replace(".", ""))
    model.save_pretrained(root / "vae")
    config, params = load_vae_diffusers(root / "vae")
    return config, params, save_official_vae(model, root / "Wan_VAE.pth")


def _assert_same_params(a, b):
    assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
    for (path, x), y in zip(
        jax.tree_util.tree_leaves_with_path(a), jax.tree_util.tree_leaves(b), strict=True
    ):
        assert x.dtype == y.dtype == jnp.float32, path
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=str(path))


def test_official_pth_loads_same_params_as_diffusers(official_pair):
    config, ref, path = official_pair
    got_config, params = load_vae_official(path, config=config)
    assert got_config == config
    _assert_same_params(params, ref)
    # the dispatcher picks the official loader for a .pth, and the Diffusers one for a folder
    _assert_same_params(load_vae(path, config)[1], ref)
    _assert_same_params(load_vae(path.parent / "vae")[1], ref)


def test_official_legacy_and_bf16_files(official_pair, tmp_path):
    """Legacy (non-zip, not memory-mappable) files load too; bfloat16 tensors widen exactly."""
    config, ref, path = official_pair
    state = torch.load(path, weights_only=True)
    legacy = tmp_path / "legacy.pth"
    torch.save(state, legacy, _use_new_zipfile_serialization=False)
    _assert_same_params(load_vae_official(legacy, config)[1], ref)
    bf16 = tmp_path / "bf16.pth"
    torch.save({k: v.to(torch.bfloat16) for k, v in state.items()}, bf16)
    want = jax.tree_util.tree_map(lambda x: x.astype(jnp.bfloat16).astype(jnp.float32), ref)
    _assert_same_params(load_vae_official(bf16, config)[1], want)


def test_load_vae_finds_the_pth_in_an_official_folder(official_pair, tmp_path):
    config, ref, path = official_pair
    folder = tmp_path / "Wan2.x-official"
    folder.mkdir()
    shutil.copy(path, folder / "Wan2.x_VAE.pth")
    (folder / "config.json").write_text("{}")  # the DiT's config in a real download
    _assert_same_params(load_vae(folder, config)[1], ref)


def test_official_config_is_told_by_z_dim(official_pair, tmp_path):
    """Without config= the z_dim picks Wan2.1 (16) or Wan2.2 (48); the tiny z_dim=4 is refused by name."""
    _, _, path = official_pair
    with pytest.raises(CheckpointError, match=r"conv2\.weight.*z_dim 4 is neither 16"):
        load_vae_official(path)
    state = {"conv2.weight": torch.zeros(16, 16, 1, 1, 1), "conv2.bias": torch.zeros(16)}
    small = tmp_path / "small.pth"
    torch.save(state, small)
    # Wan2.1 is chosen, then the (many) missing keys are reported against that file
    with pytest.raises(CheckpointError, match=r"small\.pth: \d+ official-layout VAE key\(s\) missing"):
        load_vae_official(small)
    assert official_config(torch_entries(state, small), small) == WAN21_VAE
    state48 = {"conv2.weight": torch.zeros(48, 48, 1, 1, 1)}
    assert official_config(torch_entries(state48, small), small) == WAN22_VAE
    torch.save({"encoder.conv1.weight": torch.zeros(1)}, small)
    with pytest.raises(CheckpointError, match=r"no 'conv2\.weight'"):
        load_vae_official(small)


def _edited(path, tmp_path, edit):
    state = torch.load(path, weights_only=True)
    edit(state)
    out = tmp_path / "edited.pth"
    torch.save(state, out)
    return out


def test_official_key_errors(official_pair, tmp_path):
    config, _, path = official_pair
    key = "decoder.head.2.weight"
    bad = _edited(path, tmp_path, lambda s: s.pop(key))
    with pytest.raises(
        CheckpointError, match=r"edited\.pth: 1 official-layout VAE key\(s\) missing.*" + re.escape(key)
    ):
        load_vae_official(bad, config)
    bad = _edited(path, tmp_path, lambda s: s.update({"encoder.extra.weight": torch.zeros(2)}))
    with pytest.raises(
        CheckpointError, match=r"unexpected official-layout.*encoder\.extra\.weight.*edited\.pth"
    ):
        load_vae_official(bad, config)
    key = "encoder.conv1.weight"
    bad = _edited(path, tmp_path, lambda s: s.update({key: s[key][:, :, :1]}))
    with pytest.raises(
        CheckpointError, match=r"edited\.pth: tensor 'encoder\.conv1\.weight' has shape"
    ) as info:
        load_vae_official(bad, config)
    assert f"expected {tuple(torch.load(path, weights_only=True)[key].shape)}" in str(info.value)
    bad = _edited(path, tmp_path, lambda s: s.update({key: s[key].to(torch.int32)}))
    with pytest.raises(CheckpointError, match=r"'encoder\.conv1\.weight' has dtype int32, not float"):
        load_vae_official(bad, config)


class _NotAStateDict:
    pass


def test_official_file_errors(official_pair, tmp_path):
    config, _, path = official_pair
    with pytest.raises(CheckpointError, match="missing.pth: file not found"):
        load_vae_official(tmp_path / "missing.pth", config)
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"\x00" * 100)
    with pytest.raises(CheckpointError, match="junk.pth: not a readable torch state dict"):
        load_vae_official(junk, config)
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated.pth: not a readable torch state dict"):
        load_vae(truncated, config)
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty.pth: not a readable torch state dict"):
        load_vae_official(empty, config)
    pickled = tmp_path / "object.pth"
    torch.save(_NotAStateDict(), pickled)  # loading it would need unpickling code: refused
    with pytest.raises(
        CheckpointError, match="object.pth: not a readable torch state dict.*Unsupported global"
    ):
        load_vae_official(pickled, config)
    listed = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], listed)
    with pytest.raises(CheckpointError, match="list.pth: not a state dict"):
        load_vae_official(listed, config)
    nested = tmp_path / "nested.pth"
    torch.save({"state_dict": torch.load(path, weights_only=True)}, nested)
    with pytest.raises(
        CheckpointError, match="nested.pth: not a plain state dict: entry 'state_dict' holds a dict"
    ):
        load_vae_official(nested, config)
