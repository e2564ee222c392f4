"""`convert_checkpoint` on a whole repo: VAE, umT5 encoder and tokenizer converted beside the DiT.

A tiny Diffusers-layout I2V repo (two experts, `vae/`, `text_encoder/`, `tokenizer/`) is converted in
float32. Converted parameters must equal what the PyTorch-weight loaders give on the source, bit for
bit, and a `Pipeline` built from the converted folder must condition exactly as one built from the
source. An official-layout repo root (`Wan2.1_VAE.pth`, the umT5 `.pth`, `google/umt5-xxl/`) is
converted too. Broken components must abort the whole conversion before anything is written, leaving
nothing behind.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import jax
import numpy as np
import pytest
from helpers.layouts import official_t5_state
from helpers.tokenizer import vocab_size, write_tokenizer
from helpers.torch_refs import (
    VAE_Z,
    make_encoder,
    make_reference,
    make_vae,
    save_official,
    save_official_vae,
    torch,
)

import cosjax as cj
from cosjax.cli import main as cli_main
from cosjax.models.vae import VAEConfig
from cosjax.pipeline import Pipeline
from cosjax.text import TextEncoder
from cosjax.weights import components, vae_keys
from cosjax.weights.components import TextEncoderSource, find_components, t5_config_from_json
from cosjax.weights.read import load_t5, load_vae
from cosjax.weights.tensors import CheckpointError

IMAGE = np.random.default_rng(0).integers(0, 256, (32, 48, 3), dtype=np.uint8)


def vae_config(model) -> VAEConfig:
    return VAEConfig.from_diffusers(dict(model.config))


@pytest.fixture(scope="module")
def converted(repo) -> Path:
    return cj.convert_checkpoint(repo, repo.parent / "converted", dtype="float32", progress=False)


def assert_same_tree(ours, ref) -> None:
    """Same structure, and per leaf the same dtype and the exact same values."""
    assert jax.tree_util.tree_structure(ours) == jax.tree_util.tree_structure(ref)
    for (path, a), b in zip(
        jax.tree_util.tree_leaves_with_path(ours), jax.tree_util.tree_leaves(ref), strict=True
    ):
        assert a.dtype == b.dtype, path
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=jax.tree_util.keystr(path))


def test_converted_folder_layout(converted, repo):
    meta = json.loads((converted / "cosjax_dit.json").read_text())
    assert meta["experts"] == ["high_noise", "low_noise"] and meta["boundary"] == 0.9
    parts = meta["components"]
    assert parts["vae"] == {
        "folder": "vae",
        "dtype": "float32",
        "path": str((repo / "vae").resolve()),
        "layout": "diffusers",
    }
    assert parts["text_encoder"]["dtype"] == "float32" and parts["text_encoder"]["layout"] == "diffusers"
    assert parts["tokenizer"]["files"] == ["tokenizer.json", "tokenizer_config.json"]
    assert meta["skipped_components"] == {}
    names = {p.name for p in converted.iterdir()}
    assert names == {"cosjax_dit.json", "high_noise", "low_noise", "vae", "text_encoder", "tokenizer"}
    assert (converted / "vae" / "cosjax_vae.json").is_file()
    assert (converted / "text_encoder" / "cosjax_t5.json").is_file()
    for name in ("tokenizer.json", "tokenizer_config.json"):
        assert (converted / "tokenizer" / name).read_bytes() == (repo / "tokenizer" / name).read_bytes()
    assert [p.name for p in converted.parent.iterdir() if p.name.startswith(".")] == []


def test_converted_vae_equals_source(converted, repo):
    config, params = load_vae(converted / "vae")
    ref_config, ref = load_vae(repo)
    assert config == ref_config
    assert_same_tree(params, ref)
    assert load_vae(converted)[0] == config  # the converted pipeline folder itself is accepted too
    with pytest.raises(CheckpointError, match="cosjax_vae.json: holds VAEConfig"):
        load_vae(converted, config=vae_keys.WAN21_VAE)


def test_converted_text_encoder_equals_source(converted, repo):
    config, params = load_t5(converted / "text_encoder")
    ref_config, ref = load_t5(repo)
    assert config == ref_config
    assert_same_tree(params, ref)
    # dtype on load: cast from the stored float32 as the PyTorch loader casts
    assert_same_tree(load_t5(converted, dtype="bfloat16")[1], load_t5(repo, dtype="bfloat16")[1])


def test_pipeline_from_converted_folder_conditions_as_from_source(converted, repo):
    ours = Pipeline.from_pretrained(converted, preset="vbvr")
    ref = Pipeline.from_pretrained(repo, preset="vbvr")
    assert ours.vae is not None and ours.text_encoder is not None
    assert ours.model == ref.model and ours.settings == ref.settings
    got = ours.condition(image=IMAGE, prompt="draw the path", frames=9)
    want = ref.condition(image=IMAGE, prompt="draw the path", frames=9)
    assert got.y.shape == (1, 20, 3, 4, 6) and got.context.shape == (1, 512, 32)
    for name in ("context", "negative", "y"):
        np.testing.assert_array_equal(np.asarray(getattr(got, name)), np.asarray(getattr(want, name)), name)


def test_official_repo_root(tmp_path, monkeypatch, capsys):
    """An official-layout repo root (DiT shards, `Wan2.1_VAE.pth`, the bf16 umT5 `.pth` and
    `google/umt5-xxl/`) through the CLI, in bfloat16.

    The official files carry no config; the tiny ones are registered where the real ones live (the VAE's
    under its z_dim, the encoder's as umt5-xxl).
    """
    vae_model = make_vae(seed=4)
    monkeypatch.setitem(vae_keys.OFFICIAL_CONFIGS, VAE_Z, vae_config(vae_model))
    root = save_official(make_reference(in_channels=36, out_channels=16, seed=3), tmp_path / "official")
    pth = save_official_vae(vae_model, root / "Wan2.1_VAE.pth")
    write_tokenizer(root / "google" / "umt5-xxl")
    encoder = make_encoder(vocab_size(root / "google" / "umt5-xxl"), seed=5)
    monkeypatch.setattr(components, "UMT5_XXL", t5_config_from_json(encoder.config.to_dict(), "tiny"))
    t5_pth = root / "models_t5_umt5-xxl-enc-bf16.pth"
    torch.save({k: v.bfloat16() for k, v in official_t5_state(encoder.state_dict()).items()}, t5_pth)

    assert cli_main(["convert", str(root), str(tmp_path / "out"), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "vae: float32, from" in printed and "Wan2.1_VAE.pth (official layout)" in printed
    assert "text_encoder: bfloat16, from" in printed and "(official layout)" in printed
    out = tmp_path / "out"
    meta = json.loads((out / "cosjax_dit.json").read_text())
    assert meta["dtype"] == "bfloat16" and set(meta["components"]) == {"vae", "text_encoder", "tokenizer"}
    config, params = load_vae(out / "vae")  # float32 whatever the DiT's dtype
    ref_config, ref = load_vae(pth)
    assert config == ref_config
    assert_same_tree(params, ref)
    config, params = load_t5(out / "text_encoder")
    assert_same_tree(params, load_t5(t5_pth)[1])  # bfloat16, as stored
    pipe = Pipeline.from_pretrained(out)
    source = TextEncoder.from_pretrained(root)
    prompt = ["a red cat on the mat"]
    np.testing.assert_array_equal(np.asarray(pipe.text_encoder(prompt)), np.asarray(source(prompt)))


def test_components_can_be_left_out(repo, tmp_path, capsys):
    args = ["convert", str(repo), str(tmp_path / "out"), "--quiet", "--no-vae", "--no-text-encoder"]
    assert cli_main(args) == 0
    printed = capsys.readouterr().out
    assert "vae: skipped (not requested)" in printed and "text_encoder: skipped (not requested)" in printed
    assert {p.name for p in (tmp_path / "out").iterdir()} == {"cosjax_dit.json", "high_noise", "low_noise"}
    pipe = Pipeline.from_pretrained(tmp_path / "out")
    assert pipe.vae is None and pipe.text_encoder is None
    bare = find_components(repo / "transformer", pipe.dit.config)  # a model folder holds neither
    assert bare.vae is None and bare.text_encoder is None
    assert bare.skipped == {"vae": "not found in the source", "text_encoder": "not found in the source"}


@pytest.fixture
def src(repo, tmp_path) -> Path:
    """A private copy of the repo, to break."""
    return Path(shutil.copytree(repo, tmp_path / "src"))


def _convert_fails(src: Path, tmp_path: Path, match: str, error=CheckpointError) -> None:
    dst = tmp_path / "out"
    with pytest.raises(error, match=match):
        cj.convert_checkpoint(src, dst, dtype="float32", progress=False)
    assert not dst.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "temporary output left behind"


def test_corrupt_text_encoder_shard_aborts(src, tmp_path):
    path = src / "text_encoder" / "model.safetensors"
    data = bytearray(path.read_bytes())
    data[8:20] = b"not json at!"
    path.write_bytes(bytes(data))
    _convert_fails(src, tmp_path, r"text_encoder/model\.safetensors: corrupt safetensors header")


def test_missing_tokenizer_json_aborts(src, tmp_path):
    (src / "tokenizer" / "tokenizer.json").unlink()
    _convert_fails(src, tmp_path, r"tokenizer/tokenizer\.json: not found")


def test_misshaped_vae_tensor_aborts(src, tmp_path):
    from safetensors.torch import load_file, save_file

    path = src / "vae" / "diffusion_pytorch_model.safetensors"
    state = load_file(str(path))
    state["decoder.conv_out.weight"] = torch.zeros(3, 5)
    save_file(state, str(path))
    _convert_fails(src, tmp_path, r"tensor 'decoder\.conv_out\.weight' has shape \(3, 5\)")


@pytest.mark.parametrize(
    ("file", "key"),
    [
        ("vae/diffusion_pytorch_model.safetensors", "decoder.conv_out.weight"),
        ("text_encoder/model.safetensors", "encoder.final_layer_norm.weight"),
    ],
)
def test_nan_in_a_component_aborts_naming_key_and_file(src, tmp_path, file, key):
    from safetensors.torch import load_file, save_file

    state = load_file(str(src / file))
    state[key] = (
        state[key].clone().view(-1).index_fill_(0, torch.tensor([0]), float("nan")).view(state[key].shape)
    )
    save_file(state, str(src / file))
    _convert_fails(src, tmp_path, rf"{src / file}: tensor '{key}' holds 1 NaN and 0 inf values")


def test_failure_while_writing_a_component_leaves_nothing(src, tmp_path, monkeypatch):
    real = TextEncoderSource.leaves

    def failing(source, dtype, *args):
        for i, item in enumerate(real(source, dtype, *args)):
            if i == 3:
                raise OSError("disk full (simulated)")
            yield item

    monkeypatch.setattr(TextEncoderSource, "leaves", failing)
    _convert_fails(src, tmp_path, "disk full", error=OSError)


def test_pipeline_picks_up_the_official_root_vae(tmp_path, monkeypatch):
    """`Pipeline.from_pretrained` on an official repo root (no `vae/`) loads its `Wan2.1_VAE.pth`."""
    vae_model = make_vae(seed=6)
    monkeypatch.setitem(vae_keys.OFFICIAL_CONFIGS, VAE_Z, vae_config(vae_model))
    root = save_official(make_reference(in_channels=36, out_channels=16, seed=3), tmp_path / "official")
    assert Pipeline.from_pretrained(root).vae is None  # nothing to pick up yet
    pth = save_official_vae(vae_model, root / "Wan2.1_VAE.pth")
    (root / "Wan2.2_VAE.pth").write_bytes(b"not the 16-channel VAE: never read for this model")
    pipe = Pipeline.from_pretrained(root)
    assert pipe.vae is not None
    ref_config, ref = load_vae(pth)
    assert pipe.vae.config == ref_config
    assert_same_tree(pipe.vae.params, ref)
