"""Bad weights are refused, naming the key and the file (issue 13 items 4 and 6, weight rows).

Tiny random official-layout checkpoints (2 layers, width 48) edited on disk: NaN / inf in a
checkpoint, a LoRA or a converted folder; safetensors offsets into the header or overlapping; index
entries outside the model folder; config.json fields of the wrong type; a torch.save DiT; a damaged
cosjax_dit.json or run record. Nothing is written when a conversion is refused.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import jax
import numpy as np
import pytest
from helpers.torch_refs import make_reference, save_official, torch
from safetensors.torch import load_file, save_file

import cosjax as cj
from cosjax.cli import main as cli_main
from cosjax.runs import DamagedRunError, RunFolder
from cosjax.weights.convert import save_dit
from cosjax.weights.tensors import CheckpointError, NonFiniteError, read_header

SHARD = "diffusion_pytorch_model-00001-of-00001.safetensors"
KEY = "blocks.1.ffn.0.weight"


@pytest.fixture(scope="module")
def model():
    return make_reference(seed=0)


@pytest.fixture
def src(model, tmp_path) -> Path:
    return save_official(model, tmp_path / "src", num_shards=1)


def _edit(src: Path, key: str, fn) -> None:
    tensors = load_file(str(src / SHARD))
    tensors[key] = fn(tensors[key].clone())
    save_file(tensors, str(src / SHARD))


def _refused(src: Path, tmp_path: Path, match: str, error=CheckpointError, **kw) -> None:
    dst = tmp_path / "out"
    with pytest.raises(error, match=match):
        cj.convert_checkpoint(src, dst, dtype="float32", progress=False, **kw)
    assert not dst.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


def test_nan_in_a_checkpoint_is_refused_naming_key_and_file_unless_allowed(src, tmp_path, capsys):
    _edit(
        src, KEY, lambda t: t.index_put_((torch.tensor([3]), torch.tensor([5])), torch.tensor(float("nan")))
    )
    message = (
        f"{src / SHARD}: tensor '{KEY}' holds 1 NaN and 0 inf values (of 4608); the checkpoint is damaged: "
        "download or convert it again, or pass allow_nonfinite=True (--allow-nonfinite) to use it as it is"
    )
    with pytest.raises(NonFiniteError) as err:
        cj.convert_checkpoint(src, tmp_path / "out", dtype="float32", progress=False)
    assert str(err.value) == message and not (tmp_path / "out").exists()
    with pytest.raises(NonFiniteError, match="holds 1 NaN"):
        cj.load_dit(src)  # straight from PyTorch weights
    assert cli_main(["convert", str(src), str(tmp_path / "cli"), "--quiet"]) == 2
    assert message in capsys.readouterr().err and not (tmp_path / "cli").exists()
    assert cli_main(["convert", str(src), str(tmp_path / "cli"), "--quiet", "--allow-nonfinite"]) == 0
    kept = cj.load_dit(tmp_path / "cli", allow_nonfinite=True).params["blocks"]["fc1"]["kernel"]
    assert np.isnan(np.asarray(kept)).sum() == 1


def test_inf_and_float16_overflow_are_refused(src, tmp_path):
    _edit(src, "head.head.bias", lambda t: t.fill_(float("-inf")))
    _refused(src, tmp_path, r"tensor 'head.head.bias' holds 0 NaN and 64 inf values", NonFiniteError)
    _edit(src, "head.head.bias", lambda t: t.fill_(1e5))
    with pytest.raises(
        NonFiniteError, match=r"'head.head.bias' holds values up to 1e\+05, beyond float16's 65504"
    ):
        cj.convert_checkpoint(src, tmp_path / "out", dtype="float16", progress=False)
    assert not (tmp_path / "out").exists()


def test_nan_in_a_lora_is_refused_before_anything_is_written(src, tmp_path):
    lora = tmp_path / "lora.safetensors"
    down, up = torch.randn(4, 48), torch.randn(48, 4)
    up[0, 0] = float("nan")
    save_file(
        {
            "blocks.0.self_attn.q.lora_A.default.weight": down,
            "blocks.0.self_attn.q.lora_B.default.weight": up,
        },
        str(lora),
    )
    _refused(
        src,
        tmp_path,
        rf"{lora}: tensor 'blocks.0.self_attn.q.lora_B.default.weight' holds 1 NaN",
        NonFiniteError,
        loras={"dit": [(lora, 1.0)]},
    )


def _rewrite_header(file: Path, edit) -> None:
    data = file.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    edit(header)
    raw = (
        json.dumps(header, separators=(",", ":")).encode().ljust(n)
    )  # same length: the data section stays where it was
    assert len(raw) == n
    file.write_bytes(data[:8] + raw + data[8 + n :])


def test_offsets_pointing_into_the_header_or_overlapping_are_refused(src):
    entries = read_header(src / SHARD)
    size = entries[KEY].end - entries[KEY].start

    def into_header(h):
        h[KEY]["data_offsets"] = [-size, 0]

    _rewrite_header(src / SHARD, into_header)
    with pytest.raises(
        CheckpointError, match=rf"tensor '{KEY}' has byte range -{size}..0 .* point into the header"
    ):
        read_header(src / SHARD)

    def overlap(h):
        start = h["head.head.bias"]["data_offsets"][0]
        h[KEY]["data_offsets"] = [start, start + size]

    _rewrite_header(src / SHARD, overlap)
    with pytest.raises(CheckpointError, match=r"tensors '.*' and '.*' overlap in the file"):
        read_header(src / SHARD)


@pytest.mark.parametrize(
    "entry", ["../outside.safetensors", "/tmp/outside.safetensors", "sub/../../x.safetensors"]
)
def test_index_entries_must_stay_inside_the_model_folder(src, tmp_path, entry):
    index_file = src / "diffusion_pytorch_model.safetensors.index.json"
    index = json.loads(index_file.read_text())
    index["weight_map"][KEY] = entry
    index_file.write_text(json.dumps(index))
    (tmp_path / "outside.safetensors").write_bytes((src / SHARD).read_bytes())  # exists, but is not ours
    _refused(src, tmp_path, rf"weight_map entry '{entry}' does not name a file inside {src}")


def test_converted_folder_holding_inf_is_refused_on_load_naming_the_leaf(tmp_path):
    # Orbax compresses the stored chunks, so flipped bytes decode to other values, NaN or inf among
    # them; the load-side check sees each restored leaf whatever made it non-finite.
    cfg = cj.get_preset("tiny").dit
    params = cj.init_params(cfg, jax.random.key(0))
    params["head"]["bias"] = params["head"]["bias"].at[1].set(np.inf)
    save_dit(tmp_path / "m", cfg, {"dit": params})
    with pytest.raises(
        NonFiniteError, match=rf"{tmp_path / 'm' / 'dit'}: tensor 'head/bias' holds 0 NaN and 1 inf"
    ):
        cj.load_dit(tmp_path / "m")


@pytest.mark.parametrize("value", ["48", [48], None, 48.5, True])
def test_config_field_of_the_wrong_type_names_field_and_file(src, tmp_path, value):
    raw = json.loads((src / "config.json").read_text())
    raw["dim"] = value
    (src / "config.json").write_text(json.dumps(raw))
    with pytest.raises(CheckpointError) as err:
        cj.convert_checkpoint(src, tmp_path / "out", dtype="float32", progress=False)
    assert str(err.value) == (
        f"{src / 'config.json'}: DiTConfig field 'dim' must be an integer >= 1, got {value!r}; fix that "
        "field of the config.json, or pass a preset (--preset) to take the architecture from it instead"
    )


def test_torch_pickle_dit_is_an_unsupported_format_with_the_fix(model, tmp_path):
    pth = tmp_path / "dit.pth"
    torch.save(model.state_dict(), pth)
    with pytest.raises(CheckpointError) as err:
        cj.convert_checkpoint(pth, tmp_path / "out", progress=False)
    assert str(err.value).startswith(
        f"{pth}: a PyTorch pickle (torch.save) file, not supported; cosjax reads DiT and LoRA weights from "
        "safetensors only: save the state dict with safetensors.torch.save_file("
    )
    assert "corrupt" not in str(err.value)
    with pytest.raises(CheckpointError, match=r"holds only PyTorch pickle files \(dit.pth\); cosjax reads"):
        cj.load_dit(tmp_path)


def test_damaged_cosjax_dit_json_and_run_record_name_the_file(src, tmp_path):
    dst = cj.convert_checkpoint(src, tmp_path / "ckpt", dtype="float32", progress=False)
    meta = dst / "cosjax_dit.json"
    meta.write_text(meta.read_text()[:40])
    with pytest.raises(
        CheckpointError, match=rf"^{meta}: unreadable \(.*\); the converted folder is damaged"
    ):
        cj.load_dit(dst)
    meta.write_text(json.dumps({"format": "cosjax-dit", "version": 1, "config": {"dim": "48"}}))
    with pytest.raises(CheckpointError, match=rf"^{meta}: bad config"):
        cj.load_dit(dst)

    run = RunFolder(tmp_path / "run", {"experiment": "x"})
    run.save("case-1", {"score": 1.0})
    record = run.case_file("case-1")
    record.write_text(record.read_text()[:5])
    with pytest.raises(DamagedRunError) as err:
        run.records(["case-1"])
    assert str(err.value).startswith(f"{record}: damaged, not valid JSON (")
    assert str(err.value).endswith("delete this record and rerun the same command to compute the case again")
    (tmp_path / "run" / "config.json").write_text("{")
    with pytest.raises(DamagedRunError, match="config.json: damaged, not valid JSON"):
        RunFolder(tmp_path / "run", {"experiment": "x"})
