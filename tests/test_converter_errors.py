"""Bad checkpoints and bad inputs give errors that name the key and the file, and leave nothing behind.

The checkpoints are tiny PyTorch references (`helpers.torch_refs`): those tests skip without torch.
"""

from __future__ import annotations

import json
from pathlib import Path

import jax.numpy as jnp
import pytest

import cosjax as cj
from cosjax.cli import main as cli_main
from cosjax.weights.tensors import CheckpointError

SHARD1 = "diffusion_pytorch_model-00001-of-00003.safetensors"


@pytest.fixture
def src(tmp_path) -> Path:
    from helpers.torch_refs import make_reference, save_official

    return save_official(make_reference(seed=0), tmp_path / "src", num_shards=3)


def _index(src: Path) -> dict:
    return json.loads((src / "diffusion_pytorch_model.safetensors.index.json").read_text())


def _write_index(src: Path, index: dict) -> None:
    (src / "diffusion_pytorch_model.safetensors.index.json").write_text(json.dumps(index))


def _edit_shard(src: Path, shard: str, edit) -> None:
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(src / shard))
    edit(tensors)
    save_file(tensors, str(src / shard))
    index = _index(src)
    index["weight_map"] = {k: v for k, v in index["weight_map"].items() if v != shard}
    index["weight_map"].update({k: shard for k in tensors})
    _write_index(src, index)


def _convert_fails(src: Path, tmp_path: Path, match: str, error=CheckpointError):
    dst = tmp_path / "out"
    with pytest.raises(error, match=match):
        cj.convert_checkpoint(src, dst, dtype="float32", progress=False)
    assert not dst.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")], "temporary output left behind"


def _a_key_in(src: Path, shard: str, contains: str) -> str:
    return next(k for k, v in _index(src)["weight_map"].items() if v == shard and contains in k)


def test_missing_key(src, tmp_path):
    key = _a_key_in(src, SHARD1, "blocks.1.")
    _edit_shard(src, SHARD1, lambda t: t.pop(key))
    _convert_fails(src, tmp_path, rf"missing.*'{key}'")


def test_unexpected_key(src, tmp_path):
    from helpers.torch_refs import torch

    _edit_shard(src, SHARD1, lambda t: t.update({"blocks.2.self_attn.q.weight": torch.zeros(48, 48)}))
    _convert_fails(src, tmp_path, rf"unexpected.*'blocks.2.self_attn.q.weight' \(in .*{SHARD1}\)")


def test_misshaped_tensor(src, tmp_path):
    from helpers.torch_refs import torch

    key = _a_key_in(src, SHARD1, ".weight")
    _edit_shard(src, SHARD1, lambda t: t.update({key: torch.zeros(3, 5)}))
    _convert_fails(src, tmp_path, rf"{SHARD1}: tensor '{key}' has shape \(3, 5\), expected")


def test_non_float_tensor(src, tmp_path):
    from helpers.torch_refs import torch

    key = _a_key_in(src, SHARD1, ".bias")
    _edit_shard(src, SHARD1, lambda t: t.update({key: t[key].to(torch.int32)}))
    _convert_fails(src, tmp_path, rf"{SHARD1}: tensor '{key}' has dtype int32")


def test_truncated_shard(src, tmp_path):
    path = src / SHARD1
    path.write_bytes(path.read_bytes()[:-100])
    _convert_fails(src, tmp_path, rf"{SHARD1}: truncated: tensor '.*' ends at byte")


def test_corrupt_header(src, tmp_path):
    path = src / SHARD1
    data = bytearray(path.read_bytes())
    data[8:20] = b"not json at!"
    path.write_bytes(bytes(data))
    _convert_fails(src, tmp_path, rf"{SHARD1}: corrupt safetensors header")


def test_missing_shard(src, tmp_path):
    (src / SHARD1).unlink()
    _convert_fails(src, tmp_path, rf"{SHARD1}: shard listed in .*index.json is missing")


def test_index_places_key_in_wrong_shard(src, tmp_path):
    index = _index(src)
    key = _a_key_in(src, SHARD1, "blocks.0.")
    index["weight_map"][key] = "diffusion_pytorch_model-00002-of-00003.safetensors"
    _write_index(src, index)
    _convert_fails(src, tmp_path, rf"00002-of-00003.safetensors: index .* places '{key}' in this shard")


def test_wrong_layout(tmp_path):
    from helpers.torch_refs import torch
    from safetensors.torch import save_file

    folder = tmp_path / "vae"
    folder.mkdir()
    save_file({"encoder.conv1.weight": torch.zeros(4, 3, 3, 3, 3)}, str(folder / "model.safetensors"))
    _convert_fails(
        folder, tmp_path, r"vae: not a Wan DiT checkpoint in a known layout: model.safetensors hold"
    )


def test_nothing_recognisable(tmp_path):
    (tmp_path / "empty").mkdir()
    _convert_fails(tmp_path / "empty", tmp_path, r"empty: no Wan DiT checkpoint found")


def test_one_a14b_expert_missing(src, tmp_path):
    src.rename(tmp_path / "high_noise_model")
    repo = tmp_path / "repo"
    repo.mkdir()
    (tmp_path / "high_noise_model").rename(repo / "high_noise_model")
    _convert_fails(repo, tmp_path, r"low_noise_model/ is missing")


def test_wrong_architecture_in_config(src, tmp_path):
    config = json.loads((src / "config.json").read_text())
    config["num_layers"] = 3
    (src / "config.json").write_text(json.dumps(config))
    _convert_fails(src, tmp_path, r"missing .*'blocks.2.")


def test_failure_while_writing_leaves_nothing(src, tmp_path, monkeypatch):
    from cosjax.weights.sources import ExpertSource

    real = ExpertSource.leaves

    def failing(expert, dtype, *args):
        for i, item in enumerate(real(expert, dtype, *args)):
            if i == 12:
                raise OSError("disk full (simulated)")
            yield item

    monkeypatch.setattr(ExpertSource, "leaves", failing)
    _convert_fails(src, tmp_path, "disk full", error=OSError)


def test_existing_output_is_kept_unless_overwrite(src, tmp_path):
    dst = tmp_path / "out"
    dst.mkdir()
    (dst / "keep.txt").write_text("mine")
    for overwrite in (False, True):  # a folder cosjax did not write is never replaced (issue 13 item 2)
        with pytest.raises(FileExistsError, match="non-empty folder that cosjax did not write"):
            cj.convert_checkpoint(src, dst, progress=False, overwrite=overwrite)
        assert (dst / "keep.txt").read_text() == "mine"
    (dst / "keep.txt").unlink()
    cj.convert_checkpoint(src, dst, dtype="float32", progress=False)  # an empty folder is fine
    with pytest.raises(FileExistsError, match="already exists"):
        cj.convert_checkpoint(src, dst, progress=False)
    (dst / "extra.txt").write_text("in our folder")
    cj.convert_checkpoint(src, dst, dtype="float32", overwrite=True, progress=False)  # ours: replaced
    assert not (dst / "extra.txt").exists() and (dst / "cosjax_dit.json").is_file()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_cli_convert_reports_errors_and_succeeds(src, tmp_path, capsys):
    from helpers.torch_refs import make_reference, save_official

    (src / SHARD1).write_bytes(b"xx")
    assert cli_main(["convert", str(src), str(tmp_path / "bad"), "--quiet"]) == 2
    assert SHARD1 in capsys.readouterr().err
    good = save_official(make_reference(seed=1), tmp_path / "good")
    assert cli_main(["convert", str(good), str(tmp_path / "out"), "--dtype", "float32", "--quiet"]) == 0
    meta = json.loads((tmp_path / "out" / "cosjax_dit.json").read_text())
    assert meta["dtype"] == "float32" and meta["source"]["layout"] == "official"
    assert meta["experts"] == ["dit"]


# ---- bad inputs to the model itself: clear errors at trace time ------------------------------------


@pytest.fixture(scope="module")
def tiny_i2v():
    import jax

    config = cj.get_preset("tiny-i2v").dit
    return cj.WanDiT(config), cj.init_params(config, jax.random.key(0))


@pytest.mark.parametrize(
    "x, t, ctx, y, match",
    [
        ((1, 16, 2, 4), (1,), (1, 5, 32), (1, 20, 2, 4, 4), r"x must be \[B, C, T, H, W\]"),
        ((1, 16, 2, 4, 4), (1,), (1, 5, 32), None, r"needs the conditioning input y"),
        ((1, 16, 2, 4, 4), (1,), (1, 5, 32), (1, 16, 2, 4, 4), r"takes 36 input channels .* got 32"),
        ((1, 16, 2, 4, 5), (1,), (1, 5, 32), (1, 20, 2, 4, 5), r"not divisible by the patch size"),
        ((1, 16, 2, 4, 4), (2,), (1, 5, 32), (1, 20, 2, 4, 4), r"t must be \[B\] = \[1\] or per-token"),
        ((1, 16, 2, 4, 4), (1, 7), (1, 5, 32), (1, 20, 2, 4, 4), r"per-token \[B, L\] = \[1, 8\]"),
        ((1, 16, 2, 4, 4), (1,), (1, 5, 31), (1, 20, 2, 4, 4), r"context must be \[B, L_txt, 32\]"),
        ((1, 16, 2, 4, 4), (1,), (1, 513, 32), (1, 20, 2, 4, 4), r"513 tokens; the model takes at most 512"),
        ((1, 16, 2, 4, 4), (1,), (1, 5, 32), (1, 20, 3, 4, 4), r"y must be \[B, C_y, T, H, W\] matching"),
    ],
)
def test_bad_model_inputs(tiny_i2v, x, t, ctx, y, match):
    module, params = tiny_i2v
    z = lambda s: None if s is None else jnp.zeros(s)  # noqa: E731
    with pytest.raises(ValueError, match=match):
        module.apply({"params": params}, z(x), z(t), z(ctx), z(y))


def test_unknown_preset_and_dtype():
    with pytest.raises(ValueError, match="unknown model preset 'wan3'; known presets: wan2.2-i2v-a14b"):
        cj.get_preset("wan3")
    with pytest.raises(ValueError, match="unsupported parameter dtype 'int8'"):
        cj.convert_checkpoint("nowhere", "nowhere2", dtype="int8")
