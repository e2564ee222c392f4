"""VBVR-Bench folder scanning, validation, the tfds builder, generation sizes and video writing."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import imageio.v2 as imageio
import numpy as np
import pytest
from helpers.bench import GT_FRAMES, TASKS, H, W, make_bench

from cosjax.data import vbvr_bench as vb
from cosjax.outputs import VIDEO_QUALITY, write_mp4

# Test-side imageio reads/writes of mp4s start ffmpeg after JAX is imported; the child execs at once.
pytestmark = pytest.mark.filterwarnings("ignore:os.fork:RuntimeWarning")


@pytest.fixture(scope="module")
def bench(tmp_path_factory) -> Path:
    return make_bench(tmp_path_factory.mktemp("bench") / "VBVR-Bench-Data")


@pytest.fixture
def bench_copy(bench, tmp_path) -> Path:
    return Path(shutil.copytree(bench, tmp_path / "VBVR-Bench-Data"))


def test_scan_finds_every_sample_with_its_category(bench):
    samples = vb.scan_bench(bench)
    assert [s.key for s in samples] == [
        f"{split}/{task}/{i:05d}" for split, tasks in TASKS.items() for task in tasks for i in range(2)
    ]
    cats = {s.task: s.category for s in samples}
    assert cats == {
        "G-3_stable_sort_data-generator": "Perception",
        "O-10_shape_outline_fill_data-generator": "Abstraction",
        "O-39_maze_data-generator": "Spatiality",
    }
    s = samples[-1]
    assert (s.split, s.index, s.in_domain, s.task_id) == ("Out-of-Domain_50", "00001", False, "O-39")
    assert (s.height, s.width, s.gt_frames) == (H, W, 13)
    assert s.prompt == "Solve O-39_maze_data-generator case 1."
    assert s.first_frame == bench / "Out-of-Domain_50/O-39_maze_data-generator/00001/first_frame.png"
    assert [x.gt_frames for x in samples[:2]] == list(GT_FRAMES)
    assert all(x.in_domain for x in samples[:4])


def test_category_table_matches_the_evalkit():
    counts = {c: sum(v == c for v in vb.TASK_CATEGORY.values()) for c in vb.CATEGORIES}
    assert counts == {
        "Abstraction": 23,
        "Knowledge": 14,
        "Perception": 30,
        "Spatiality": 13,
        "Transformation": 20,
    }
    assert vb.task_category("O-39_maze_data-generator") == "Spatiality"
    assert vb.task_category("G-135_select_next_figure") == "Abstraction"
    assert vb.task_category("O-3_unknown") == "unknown"  # O-3 is not a bench task; O-39 must not match it
    assert vb.task_category("G-1350_x") == vb.task_category("maze") == "unknown"


G3 = "In-Domain_50/G-3_stable_sort_data-generator"
O10 = "In-Domain_50/O-10_shape_outline_fill_data-generator"
O39 = "Out-of-Domain_50/O-39_maze_data-generator"
# name -> (path relative to the root, what is done to it)
BREAKS = {
    "missing prompt": (f"{G3}/00001/prompt.txt", "delete"),
    "missing first frame": (f"{O39}/00000/first_frame.png", "delete"),
    "wrong split name": ("In-Domain_50", "rename"),
    "empty split": ("Out-of-Domain_50", "empty"),
    "empty task": (O39, "empty"),
    "sample not an index": (f"{G3}/00000", "rename"),
    "unreadable png": (f"{O10}/00000/final_frame.png", "garbage"),
    "unreadable mp4": (f"{O10}/00001/ground_truth.mp4", "garbage"),
    "empty prompt": (f"{G3}/00000/prompt.txt", "blank"),
}


def apply_break(root: Path, name: str) -> Path:
    """Breaks the bench copy at `root` and returns the path the report must name."""
    rel, action = BREAKS[name]
    path = root / rel
    if action == "delete":
        path.unlink()
    elif action == "rename":  # a split folder renamed is reported missing; a sample folder, by its new name
        new = path.with_name("In-Domain" if rel == "In-Domain_50" else "0")
        path.rename(new)
        path = path if rel == "In-Domain_50" else new
    elif action == "empty":
        shutil.rmtree(path)
        path.mkdir()
    else:
        path.write_bytes(b"not media" if action == "garbage" else b" \n")
    return path


@pytest.mark.parametrize("name", list(BREAKS))
def test_malformed_folder_is_reported_by_path_before_anything_runs(bench_copy, tmp_path, name):
    bad_path = apply_break(bench_copy, name)
    data_dir = tmp_path / "tfds"
    with pytest.raises(vb.BenchDataError) as e:
        vb.load_bench(bench_copy, data_dir=data_dir)
    assert any(p.startswith(str(bad_path)) for p in e.value.problems), e.value.problems
    assert str(bad_path) in str(e.value)
    assert not data_dir.exists()  # nothing was built


def test_all_problems_are_collected_at_once(bench_copy):
    p1 = apply_break(bench_copy, "missing prompt")
    p2 = apply_break(bench_copy, "missing first frame")
    with pytest.raises(vb.BenchDataError) as e:
        vb.scan_bench(bench_copy)
    assert len(e.value.problems) == 2 and str(p1) in str(e.value) and str(p2) in str(e.value)


@pytest.mark.parametrize("make", [lambda p: p.mkdir(), lambda p: None], ids=["empty folder", "no folder"])
def test_empty_or_absent_root(tmp_path, make):
    root = tmp_path / "bench"
    make(root)
    with pytest.raises(vb.BenchDataError, match=str(root)):
        vb.scan_bench(root)


def test_tfds_builder_round_trips_the_records(bench_copy, tmp_path):
    data_dir = tmp_path / "tfds"
    records = vb.load_bench(bench_copy, data_dir=data_dir, as_records=True)
    samples = vb.scan_bench(bench_copy)
    assert len(records) == len(samples) == 6
    for r, s in zip(records, samples, strict=True):
        assert (r["split"], r["task"], r["index"], r["category"]) == (s.split, s.task, s.index, s.category)
        assert r["prompt"] == s.prompt and r["gt_video"] == str(s.gt_video)
        assert (r["gt_frames"], r["height"], r["width"], bool(r["in_domain"])) == (
            s.gt_frames,
            H,
            W,
            s.in_domain,
        )
        assert r["first_frame"].dtype == np.uint8
        np.testing.assert_array_equal(r["first_frame"], imageio.imread(s.first_frame))
        np.testing.assert_array_equal(r["final_frame"], imageio.imread(s.final_frame))
    sources = vb.load_bench(bench_copy, data_dir=data_dir)
    assert {k: len(v) for k, v in sources.items()} == {"in_domain": 4, "out_of_domain": 2}
    builds = lambda: sorted(p.name for p in (data_dir / "vbvr_bench").iterdir())  # noqa: E731
    assert len(builds()) == 1  # the second call reused the build
    samples[0].prompt_path.write_text("A new prompt.")
    assert vb.load_bench(bench_copy, data_dir=data_dir, as_records=True)[0]["prompt"] == "A new prompt."
    assert len(builds()) == 2  # a changed folder is rebuilt


def test_builder_reads_manual_dir(bench, tmp_path):
    import tensorflow_datasets as tfds

    builder = vb.VbvrBench(data_dir=str(tmp_path / "tfds"))
    builder.download_and_prepare(
        file_format="array_record", download_config=tfds.download.DownloadConfig(manual_dir=str(bench))
    )
    source = builder.as_data_source("out_of_domain")
    assert len(source) == 2 and {source[i]["task"] for i in range(2)} == {b"O-39_maze_data-generator"}


@pytest.mark.parametrize(
    "hw, n, expected",
    [
        ((32, 48), 9, (9, 32, 48)),
        ((33, 50), 10, (13, 48, 64)),
        ((480, 854), 81, (81, 480, 864)),
        ((1024, 1024), 8, (9, 1024, 1024)),
        ((16, 16), 12, (13, 16, 16)),
        ((17, 15), 1, (1, 32, 16)),
        ((16, 16), 2, (5, 16, 16)),
    ],
)
def test_generation_size_rounds_up_like_diffsynth(hw, n, expected):
    assert vb.generation_size(hw, n) == expected


def test_generation_size_rejects_empty():
    with pytest.raises(ValueError):
        vb.generation_size((0, 16), 9)


def test_video_path_and_an_evalkit_video(bench, tmp_path):
    sample = vb.scan_bench(bench)[1]
    path = vb.video_path(tmp_path / "my_model", sample)
    assert path == tmp_path / "my_model/In-Domain_50/G-3_stable_sort_data-generator/00001.mp4"
    frames = np.linspace(0, 255, 9 * H * W * 3).reshape(9, H, W, 3).astype(np.uint8)
    assert write_mp4(path, frames, vb.FPS, VIDEO_QUALITY["vbvr"]) == path
    back = np.stack(imageio.mimread(path, memtest=False))
    assert back.shape == (9, H, W, 3) and vb.count_frames(path) == 9
    assert np.abs(back.astype(float) - frames).mean() < 8  # lossy H.264
    assert sorted(p.name for p in path.parent.iterdir()) == ["00001.mp4"]


# --- VBVR-Bench.json cross-check --------------------------------------------------------------------


def test_manifest_cross_check_of_a_complete_bench(bench, caplog):
    with caplog.at_level(logging.WARNING, logger="cosjax.data.vbvr_bench"):
        index = vb.inspect_bench(bench)
    assert index.manifest == bench / vb.MANIFEST and len(index.samples) == 6
    assert index.absent == [] and index.unlisted == [] and index.prompt_mismatch == []
    c = index.counts()
    assert c["In-Domain_50"] == {
        "tasks_expected": 50,
        "tasks_found": 2,
        "samples_expected": 250,
        "samples_listed": 4,
        "samples_found": 4,
        "samples_absent": 0,
    }
    assert c["total"]["samples_expected"] == 500 and c["total"]["tasks_expected"] == 100
    assert (c["total"]["samples_listed"], c["total"]["samples_found"]) == (6, 6)
    # far from the published 500: said in the log, not silent
    assert (
        "6 of the published 500 samples found" in caplog.text and "lists 6, 0 of them absent" in caplog.text
    )


def test_absent_sample_is_named_counted_and_the_rest_is_used(bench_copy, caplog):
    gone = f"{O10}/00001"
    shutil.rmtree(bench_copy / gone)
    with caplog.at_level(logging.WARNING, logger="cosjax.data.vbvr_bench"):
        index = vb.inspect_bench(bench_copy)
    assert [a.key for a in index.absent] == [gone]
    assert index.absent[0].category == "Abstraction" and index.absent[0].in_domain
    assert len(index.samples) == 5 and gone not in {s.key for s in index.samples}
    c = index.counts()["In-Domain_50"]
    assert (c["samples_listed"], c["samples_found"], c["samples_absent"]) == (4, 3, 1)
    assert f"Absent (listed in {bench_copy / vb.MANIFEST}" in caplog.text and gone in caplog.text
    assert vb.scan_bench(bench_copy) == index.samples


def test_absent_task_and_split_folders_are_absent_samples(bench_copy):
    shutil.rmtree(bench_copy / G3)
    shutil.rmtree(bench_copy / "Out-of-Domain_50")
    index = vb.inspect_bench(bench_copy)
    assert [a.key for a in index.absent] == [f"{G3}/00000", f"{G3}/00001", f"{O39}/00000", f"{O39}/00001"]
    assert [s.task for s in index.samples] == ["O-10_shape_outline_fill_data-generator"] * 2
    c = index.counts()
    assert c["Out-of-Domain_50"]["tasks_found"] == 0 and c["total"]["samples_absent"] == 4


def test_unlisted_folders_and_prompt_mismatch_are_warned(bench_copy, caplog):
    shutil.copytree(bench_copy / f"{G3}/00001", bench_copy / f"{G3}/00002")
    (bench_copy / f"{O39}/00000/prompt.txt").write_text("Another prompt.")
    with caplog.at_level(logging.WARNING, logger="cosjax.data.vbvr_bench"):
        index = vb.inspect_bench(bench_copy)
    assert index.unlisted == [f"{G3}/00002"] and f"{G3}/00002" not in {s.key for s in index.samples}
    assert index.prompt_mismatch == [f"{O39}/00000"]
    assert "not listed in" in caplog.text and "prompt.txt files differ" in caplog.text


def test_without_manifest_the_folders_decide(bench_copy, caplog):
    (bench_copy / vb.MANIFEST).unlink()
    shutil.rmtree(bench_copy / f"{G3}/00001")
    with caplog.at_level(logging.WARNING, logger="cosjax.data.vbvr_bench"):
        index = vb.inspect_bench(bench_copy)
    assert index.manifest is None and index.absent == [] and len(index.samples) == 5
    assert index.counts()["total"]["samples_listed"] is None
    assert f"no {vb.MANIFEST}" in caplog.text and "5 of the published 500" in caplog.text


def _entries(root: Path) -> list:
    return json.loads((root / vb.MANIFEST).read_text())


@pytest.mark.parametrize(
    "corrupt, message",
    [
        (lambda e: {"entries": e}, "expected a JSON list"),
        (lambda e: [e[0], "x", *e[1:]], "entry 1: not an object"),
        (lambda e: [{k: v for k, v in e[0].items() if k != "prompt_path"}, *e[1:]], "prompt_path is missing"),
        (
            lambda e: [e[0] | {"final_frame_path": e[1]["final_frame_path"]}, *e[1:]],
            "different sample folders",
        ),
        (lambda e: [e[0] | {"first_frame_path": "G-3/00000/first_frame.png"}, *e[1:]], "is not <split>"),
        (lambda e: [e[0] | {"prompt_path": e[0]["prompt_path"][:-4] + ".md"}, *e[1:]], "does not name"),
        (lambda e: [*e, e[2]], "already listed by entry 2"),
    ],
    ids=["not a list", "not an object", "key missing", "paths disagree", "no split", "wrong file", "dup"],
)
def test_malformed_manifest_is_reported_by_entry(bench_copy, corrupt, message):
    path = bench_copy / vb.MANIFEST
    path.write_text(json.dumps(corrupt(_entries(bench_copy))))
    with pytest.raises(vb.BenchDataError, match=message) as e:
        vb.inspect_bench(bench_copy)
    assert all(p.startswith(str(path)) for p in e.value.problems), e.value.problems
    assert "huggingface-cli download Video-Reason/VBVR-Bench-Data" in str(e.value)  # the fix


def test_manifest_paths_may_carry_a_prefix(bench_copy):
    entries = [
        {k: f"VBVR-Bench-Data/{v}" if k.endswith("_path") else v for k, v in e.items()}
        for e in _entries(bench_copy)
    ]
    (bench_copy / vb.MANIFEST).write_text(json.dumps(entries))
    assert len(vb.inspect_bench(bench_copy).samples) == 6
