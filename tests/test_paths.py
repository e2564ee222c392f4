"""Paths given by users (issue 13 items 1, 2, 7): relative paths load from any working directory,
nothing a user owns is removed or overwritten, written files follow the umask, TensorBoard event
files are unique per writer, and temp folders of dead writers are cleaned on the next run."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest
from helpers.bench import make_bench

import cosjax as cj
from cosjax.cli import main as cli_main
from cosjax.configs import get_preset
from cosjax.models.dit import init_params
from cosjax.paths import write_atomic
from cosjax.pipeline import Pipeline
from cosjax.runs import RunFolder
from cosjax.tensorboard import Writer
from cosjax.toy.codec import prompt_embeddings
from cosjax.toy.config import toy_dit_config
from cosjax.toy.model_file import save_toy
from cosjax.weights.convert import save_dit

pytestmark = pytest.mark.filterwarnings("ignore:os.fork:RuntimeWarning")


def assert_same_params(ours, ref) -> None:
    assert jax.tree_util.tree_structure(ours) == jax.tree_util.tree_structure(ref)
    for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(ref), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """ROOT/out/model: a converted folder (save_dit, absolute path) and its parameters."""
    config = get_preset("tiny").dit
    params = init_params(config, jax.random.key(0))
    root = tmp_path_factory.mktemp("relative")
    save_dit(root / "out" / "model", config, {"dit": params})
    return root, params


# ---- item 1: relative paths ---------------------------------------------------------------------


def test_load_dit_from_a_relative_path(tiny_model, monkeypatch):
    root, params = tiny_model
    monkeypatch.chdir(root)
    assert_same_params(cj.load_dit("out/model").params, params)


def test_pipeline_from_a_relative_path(tiny_model, monkeypatch):
    root, params = tiny_model
    monkeypatch.chdir(root / "out")
    pipe = Pipeline.from_pretrained("./model")
    assert_same_params(pipe.dit.params, params)


def test_cli_run_with_relative_model_data_and_out(repo, tmp_path, monkeypatch, capsys):
    cj.convert_checkpoint(repo, tmp_path / "ckpt" / "wan", dtype="float32", progress=False)
    make_bench(tmp_path / "VBVR-Bench-Data")
    monkeypatch.chdir(tmp_path)
    argv = ["run", "trajectory", "--model", "ckpt/wan", "--data", "vbvr-bench:VBVR-Bench-Data"]
    assert cli_main([*argv, "--out", "runs/t", "--quiet", "cases=1", "steps=1"]) == 0, capsys.readouterr().err
    results = json.loads((tmp_path / "runs" / "t" / "results.json").read_text())
    assert len(results["cases"]) == 3
    assert results["config"]["model"]["path"] == str(tmp_path / "ckpt" / "wan")  # stored absolute
    assert results["config"]["model"]["bench"] == str(tmp_path / "VBVR-Bench-Data")
    assert f"results: {tmp_path / 'runs' / 't'}/results.json" in capsys.readouterr().out


# ---- item 2: never delete user data -------------------------------------------------------------


def user_folder(path: Path) -> Path:
    (path / "important").mkdir(parents=True)
    (path / "notes.txt").write_text("my notes")
    (path / "important" / "weights.bin").write_bytes(b"\x00\x01\x02")
    return path


def assert_user_folder_intact(path: Path) -> None:
    assert (path / "notes.txt").read_text() == "my notes"
    assert (path / "important" / "weights.bin").read_bytes() == b"\x00\x01\x02"
    assert sorted(p.name for p in path.iterdir()) == ["important", "notes.txt"]


def snapshot(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def not_ours(folder: Path, marker: str, what: str) -> str:
    return (
        f"{what} {folder} is a non-empty folder that cosjax did not write (no {marker}); refusing to "
        "write into it or replace it: choose a new or empty folder"
    )


def test_train_toy_export_never_replaces_a_user_folder(tmp_path, capsys):
    export_dir = user_folder(tmp_path / "DIR")
    argv = ["train-toy", "--workdir", str(tmp_path / "w"), "--export", str(export_dir), "--quiet"]
    assert cli_main([*argv, "steps=2", "warmup=0", "per_family=2", "dim=16", "layers=1", "heads=2"]) == 2
    assert not_ours(export_dir, "toy.json", "export folder") in capsys.readouterr().err
    assert_user_folder_intact(export_dir)
    assert not (tmp_path / "w").exists()  # refused before training


@pytest.fixture(scope="module")
def toy_parts():
    cfg = toy_dit_config(dim=16, num_layers=1, num_heads=2, patch_size=(1, 8, 8), text_dim=8)
    return cfg, init_params(cfg, jax.random.key(0)), prompt_embeddings(0, 2, cfg.text_len, cfg.text_dim)


def test_save_toy_replaces_only_its_own_folder(toy_parts, tmp_path):
    cfg, params, table = toy_parts
    folder = user_folder(tmp_path / "DIR")
    with pytest.raises(FileExistsError) as e:
        save_toy(folder, cfg, params, table, (9, 32, 32))
    assert str(e.value) == not_ours(folder, "toy.json", "toy model folder")
    assert_user_folder_intact(folder)
    ours = save_toy(tmp_path / "toy", cfg, params, table, (9, 32, 32))
    save_toy(ours, cfg, params, table, (9, 32, 32), sampling={"steps": 3})  # an earlier one: replaced
    assert json.loads((ours / "toy.json").read_text())["sampling"]["steps"] == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["DIR", "toy"]  # no temp or old folder left


@pytest.fixture
def pytorch_src(tmp_path) -> Path:
    from helpers.torch_refs import make_reference, save_official

    return save_official(make_reference(seed=1), tmp_path / "ckpt_src" / "model")


@pytest.mark.parametrize(
    "where, relation",
    [("same", "is the source"), ("parent", "contains the source"), ("inside", "lies inside the source")],
)
def test_convert_never_touches_its_source(pytorch_src, tmp_path, capsys, where, relation):
    before = snapshot(tmp_path)
    dst = {"same": pytorch_src, "parent": pytorch_src.parent, "inside": pytorch_src / "converted"}[where]
    assert cli_main(["convert", str(pytorch_src), str(dst), "--overwrite", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert f"cosjax convert: error: DST {dst} {relation} {pytorch_src}" in err
    assert snapshot(tmp_path) == before  # the source byte for byte, nothing added anywhere


def test_save_dit_never_replaces_a_user_folder(tmp_path):
    config = get_preset("tiny").dit
    folder = user_folder(tmp_path / "DIR")
    with pytest.raises(FileExistsError) as e:
        save_dit(folder, config, {"dit": init_params(config, jax.random.key(0))}, overwrite=True)
    assert str(e.value) == not_ours(folder, "cosjax_dit.json", "destination")
    assert_user_folder_intact(folder)


def test_run_out_never_writes_into_a_user_folder(tmp_path):
    folder = user_folder(tmp_path / "DIR")
    (folder / "results.csv").write_text("my,table\n")
    with pytest.raises(FileExistsError) as e:
        RunFolder(folder, {"experiment": "trajectory"})
    assert str(e.value) == not_ours(folder, "config.json", "--out")
    assert (folder / "results.csv").read_text() == "my,table\n" and not (folder / "config.json").exists()
    RunFolder(tmp_path / "empty", {"experiment": "trajectory"})  # a new folder is claimed
    RunFolder(tmp_path / "empty", {"experiment": "trajectory"})  # and resumed
    assert json.loads((tmp_path / "empty" / "config.json").read_text()) == {"experiment": "trajectory"}


# ---- item 7: housekeeping ----------------------------------------------------------------------


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_atomic_files_follow_the_umask(tmp_path, umask, mode):
    from cosjax.outputs import write_mp4
    from cosjax.text import EmbeddingCache

    cache = EmbeddingCache(tmp_path / "cache", "f" * 16)
    ids = np.arange(3, dtype=np.int32)
    old = os.umask(umask)
    try:
        write_atomic(tmp_path / "record.json", "{}")
        write_mp4(tmp_path / "video.mp4", np.zeros((5, 16, 16, 3), np.uint8), fps=4, quality=5)
        cache.store(ids, np.ones((3, 4), np.float32))
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "record.json").stat().st_mode) == mode
    assert stat.S_IMODE((tmp_path / "video.mp4").stat().st_mode) == mode
    assert stat.S_IMODE(cache.path(ids).stat().st_mode) == mode
    np.testing.assert_array_equal(cache.load(ids, 4), np.ones((3, 4), np.float32))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "record.json", "video.mp4"]
    assert [p.name for p in cache.folder.iterdir()] == [cache.path(ids).name]


def test_writers_started_together_get_their_own_event_files(tmp_path, monkeypatch):
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    monkeypatch.setattr(time, "time", lambda: 1_764_600_000.0)  # both start in the same second
    writers = [Writer(tmp_path / "tb"), Writer(tmp_path / "tb")]
    for i, w in enumerate(writers):
        w.scalar("run/id", i, step=0)
        w.close()
    files = sorted((tmp_path / "tb").iterdir())
    assert len(files) == 2
    values = []
    for f in files:
        events = [e for e in EventFileLoader(str(f)).Load() if e.summary.value]
        values += [v.tensor.float_val[0] for e in events for v in e.summary.value]
    assert sorted(values) == [0.0, 1.0]  # each run's scalar in its own file, none lost


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", ""])
    proc.wait()
    return proc.pid


def test_stale_temp_folders_of_dead_writers_are_cleaned(tmp_path):
    config = get_preset("tiny").dit
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        dead, host = _dead_pid(), socket.gethostname()
        names = {
            f".model.tmp-{dead}": False,  # left by a SIGKILLed writer: cleaned
            f".model.tmp-{host}-{dead}": False,
            f".model.old-{host}-{dead}": False,
            f".model.tmp-{live.pid}": True,  # a live writer's: kept
            f".model.tmp-{host}-{live.pid}": True,
            f".model.tmp-otherhost-{dead}": True,  # another host's (shared disk): its own to clean
            f".other.tmp-{dead}": True,  # another destination's
        }
        for name in names:
            (tmp_path / name).mkdir()
            (tmp_path / name / "partial.bin").write_bytes(b"x")
        save_dit(tmp_path / "model", config, {"dit": init_params(config, jax.random.key(0))})
        left = {p.name for p in tmp_path.iterdir()}
        assert left == {"model"} | {n for n, keep in names.items() if keep}
    finally:
        live.kill()
        live.wait()


# ---- issue 16 item 4: gs:// URLs through etils.epath, on a local stand-in ----------------------


def test_user_path_keeps_urls_and_makes_local_paths_absolute(tmp_path, monkeypatch):
    from etils import epath

    from cosjax.paths import user_path

    monkeypatch.chdir(tmp_path)
    assert user_path("out/model") == tmp_path / "out" / "model"
    url = user_path("gs://b/x/model")
    assert isinstance(url, epath.Path) and str(url / "cosjax_dit.json") == "gs://b/x/model/cosjax_dit.json"
    assert str(Path("gs://b/x")) == "gs:/b/x"  # why no user string may go through pathlib
    with pytest.raises(ValueError, match="unsupported URL scheme 'ftp'"):
        user_path("ftp://host/x")


def test_run_reads_model_and_bench_from_gs_and_writes_results_there(repo, tmp_path, bucket):
    import shutil

    cj.convert_checkpoint(repo, tmp_path / "local" / "wan", dtype="float32", progress=False)
    make_bench(tmp_path / "local" / "bench")
    shutil.copytree(tmp_path / "local", bucket.root / "bucket")
    settings = ["--quiet", "cases=1", "steps=1"]
    common = ["run", "trajectory", *settings]
    local = tmp_path / "local"
    paths = ["--model", str(local / "wan"), "--data", f"vbvr-bench:{local / 'bench'}"]
    assert cli_main([*common, *paths, "--out", str(local / "r")]) == 0
    url = ["--model", "gs://bucket/wan", "--data", "vbvr-bench:gs://bucket/bench", "--out", "gs://bucket/r"]
    assert cli_main([*common, *url]) == 0
    parts = ("high_noise", "low_noise", "text_encoder", "vae")
    assert sorted(bucket.orbax_urls) == [f"gs://bucket/wan/{n}" for n in parts]  # read from the URL
    out = bucket.root / "bucket" / "r"  # everything landed under the URL
    results = json.loads((out / "results.json").read_text())
    assert results["config"]["model"]["path"] == "gs://bucket/wan"
    assert results["config"]["model"]["bench"] == "gs://bucket/bench"
    expected = json.loads((local / "r" / "results.json").read_text())
    assert results["cases"] == expected["cases"] and results["summary"] == expected["summary"]
    assert snapshot(out / "cases") == snapshot(local / "r" / "cases")  # records and grids, byte for byte
    assert (out / "results.csv").read_text() == (local / "r" / "results.csv").read_text()
    assert [p.name.split(".")[:3] for p in (out / "tb").iterdir()] == [["events", "out", "tfevents"]]
    assert not any(p.name.startswith(".") for p in out.rglob("*"))  # no temp file left in the bucket


def test_toy_model_and_video_through_gs(toy_parts, tmp_path, bucket):
    from cosjax.data.vbvr_bench import count_frames
    from cosjax.outputs import write_mp4
    from cosjax.toy.model_file import load_toy

    cfg, params, table = toy_parts
    save_toy(bucket.root / "bucket" / "toy", cfg, params, table, (9, 32, 32))
    dit, meta, got_table = load_toy("gs://bucket/toy")
    assert_same_params(dit.params, params)
    np.testing.assert_array_equal(got_table, np.asarray(table, np.float32))
    frames = np.random.default_rng(0).integers(0, 256, (5, 16, 16, 3), dtype=np.uint8)
    write_mp4("gs://bucket/v/00000.mp4", frames, fps=4, quality=5)
    assert count_frames("gs://bucket/v/00000.mp4") == 5
    assert [p.name for p in (bucket.root / "bucket" / "v").iterdir()] == ["00000.mp4"]
    with pytest.raises(ValueError, match="gs://bucket/v: holds no cosjax_dit.json .* must be a local path"):
        cj.load_dit("gs://bucket/v")  # not a converted folder: PyTorch weights are read locally only
