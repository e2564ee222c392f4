"""Every experiment end to end on a tiny converted Wan2.2 I2V repo and a tiny fake VBVR-Bench folder,
with the ensemble's videos scored by the stand-in EvalKit script."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers.bench import make_bench
from helpers.fakes import failing_python

import cosjax as cj
import experiments
from cosjax.data.vbvr_bench import BenchDataError

pytestmark = pytest.mark.filterwarnings("ignore:os.fork:RuntimeWarning")
FAKE_EVALKIT = Path(__file__).parent / "fake_evalkit"
STEPS = 2


@pytest.fixture(scope="module")
def model(repo):
    return str(cj.convert_checkpoint(repo, repo.parent / "converted-exp", dtype="float32", progress=False))


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    """Two samples per task, both 9-frame GT videos (so a task's samples can be swapped)."""
    return make_bench(tmp_path_factory.mktemp("bench") / "VBVR-Bench-Data", gt_frames=(9, 9))


def run(name, model, bench, out, **overrides):
    module = experiments.get(name)
    config = module.Config(**{"data": f"vbvr-bench:{bench}", "cases": 1, "steps": STEPS, **overrides})
    return module.run(config, model=model, out=out, progress=False)


def rows(out):
    return json.loads((out / "results.json").read_text())["cases"]


def test_trajectory_and_noise_perturbation(model, bench, tmp_path):
    run("trajectory", model, bench, tmp_path / "t")
    got = rows(tmp_path / "t")
    assert len(got) == 3 and {r["split"] for r in got} == {"in_domain", "held_out"}
    assert all(r["final_score"] is None and r["x0_scores"] == [None] * STEPS for r in got)
    import imageio.v3 as iio

    grid = iio.imread(tmp_path / "t" / "cases" / got[0]["case"] / "grid.png")
    assert grid.shape == (STEPS * 33 * 4, 9 * 49 * 4, 3)  # 32x48 frames at the GT's 9 frames
    run("noise-perturbation", model, bench, tmp_path / "n", cases=1)
    r = rows(tmp_path / "n")[0]
    assert len(r["step_agreement"]) == STEPS and len(r["frame_agreement"]) == 3  # 9 frames -> 3 latent
    assert r["clean_score"] is None


def test_energy_flow_and_swap(model, bench, tmp_path):
    s = run("layer-energy", model, bench, tmp_path / "e", energy_steps=(0, 1))
    assert np.asarray(s["mean_energy"]).shape == (2, 2)
    s = run("information-flow", model, bench, tmp_path / "i", perturb_steps=(1,))
    np.testing.assert_allclose(np.asarray(s["mean_dissimilarity"])[0, 0], 0.0, atol=1e-5)
    s = run("latent-swap", model, bench, tmp_path / "s", swap_steps=(0, 1))
    got = rows(tmp_path / "s")
    assert len(got) == 3 and all(r["alternative"].endswith("00001") for r in got)
    for r in got:  # the last block swapped at every step: the alternative's video (uint8 rounding)
        assert r["distance_to_alternative"][-1] < 1.0


def test_ensemble_writes_evalkit_layout_and_scores_it(model, bench, tmp_path):
    out = tmp_path / "ens"
    summary = run("ensemble", model, bench, out, cases=None, seeds=2, evalkit=str(FAKE_EVALKIT))
    for arm in ("plain", "ensemble"):
        videos = sorted(
            p.relative_to(out / "videos" / arm).as_posix() for p in (out / "videos" / arm).rglob("*.mp4")
        )
        assert len(videos) == 6 and videos[0] == "In-Domain_50/G-3_stable_sort_data-generator/00000.mp4"
        assert summary[arm]["num_samples"] == 6 and summary[arm]["num_missing"] == 0
        assert 0.0 <= summary[arm]["overall"] <= 1.0
    assert (out / "tb" / "evalkit_plain").is_dir() and "plain" in summary["table"]


def test_malformed_bench_is_reported_before_loading(model, bench, tmp_path):
    import shutil

    broken = Path(shutil.copytree(bench, tmp_path / "VBVR-Bench-Data"))
    victim = next(broken.glob("In-Domain_50/*/00000"))
    (victim / "prompt.txt").unlink()
    with pytest.raises(BenchDataError, match="prompt.txt"):
        run("trajectory", model, broken, tmp_path / "never")
    assert not (tmp_path / "never").exists()


def test_absent_sample_and_failed_scoring_keep_the_run_and_cosjax_score_retries(
    model, bench, tmp_path, caplog, capsys, monkeypatch
):
    """A bench missing one listed sample and an EvalKit interpreter without cv2: the run completes on
    the rest (named, counted missing), scoring fails with why and how; `cosjax score` then scores it."""
    import logging
    import shutil
    import sys

    from cosjax.cli import main

    partial = Path(shutil.copytree(bench, tmp_path / "VBVR-Bench-Data"))
    gone = "Out-of-Domain_50/O-39_maze_data-generator/00000"
    shutil.rmtree(partial / gone)
    out, bad = tmp_path / "ens", failing_python(tmp_path)
    argv = ["run", "ensemble", "--model", model, "--data", f"vbvr-bench:{partial}", "--out", str(out)]
    argv += [
        "--quiet",
        "cases=1",
        "seeds=2",
        f"steps={STEPS}",
        f"evalkit={FAKE_EVALKIT}",
        f"evalkit_python={bad}",
    ]
    with caplog.at_level(logging.WARNING):
        assert main(argv) == 3
    assert gone in caplog.text and "counted missing" in caplog.text  # named when the bench is read
    assert (
        "scoring at the end will fail" in caplog.text and "No module named 'cv2'" in caplog.text
    )  # pre-flight
    err = capsys.readouterr().err
    assert f"interpreter {bad}" in err and "No module named 'cv2'" in err and "cosjax[evalkit]" in err
    assert f"cosjax score {out} --evalkit {FAKE_EVALKIT} --python {bad}" in err

    # otherwise complete: the first sample of each task on disk generated, both arms' videos, records
    ids = [
        "In-Domain_50-G-3_stable_sort_data-generator-00000",
        "In-Domain_50-O-10_shape_outline_fill_data-generator-00000",
    ]
    results = json.loads((out / "results.json").read_text())
    assert [r["case"] for r in results["cases"]] == ids
    assert results["summary"]["scoring"]["status"] == "failed"
    assert results["summary"]["bench"]["Out-of-Domain_50"]["samples_absent"] == 1
    videos = {p: p.read_bytes() for p in (out / "videos").rglob("*.mp4")}
    records = {p: p.read_bytes() for p in (out / "cases").glob("*.json")}
    assert len(videos) == 4 and len(records) == 2

    def no_model(*args, **kwargs):
        raise AssertionError("cosjax score must not load the model")

    monkeypatch.setattr(cj.Pipeline, "from_pretrained", no_model)
    assert main(["score", str(out), "--python", sys.executable]) == 0
    summary = json.loads((out / "results.json").read_text())["summary"]
    assert summary["scoring"]["status"] == "scored" and summary["scoring"]["python"] == sys.executable
    for arm in ("plain", "ensemble"):
        s = summary[arm]
        assert (s["num_samples"], s["num_scored"], s["num_missing"], s["num_absent"]) == (3, 2, 1, 1)
        assert s["missing"] == s["absent"] == [gone] and s["out_of_domain"] == 0.0
        assert 0.0 < s["overall"] <= 2 / 3
    assert {p: p.read_bytes() for p in (out / "videos").rglob("*.mp4")} == videos  # nothing regenerated
    assert {p: p.read_bytes() for p in (out / "cases").glob("*.json")} == records
    assert "1 of them absent from the bench folder" in capsys.readouterr().out


def test_cosjax_score_refuses_what_it_cannot_score(bench, tmp_path):
    from experiments.ensemble import score

    with pytest.raises(FileNotFoundError, match="config.json not found"):
        score(tmp_path / "nothing", evalkit=str(FAKE_EVALKIT))
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    config = {"experiment": "ensemble", "config": {"data": f"vbvr-bench:{bench}", "cases": 1}}
    for change, message in [
        ({"experiment": "trajectory"}, "only ensemble runs are scored"),
        ({"config": {"data": "toy:@both", "cases": 1}}, "toy runs are scored as their cases finish"),
        ({}, r"3 of 3 cases .* have no record yet .*rerunning its `cosjax run ensemble`"),
    ]:
        (run_dir / "config.json").write_text(json.dumps(config | change))
        with pytest.raises(ValueError, match=message):
            score(run_dir, evalkit=str(FAKE_EVALKIT))
    with pytest.raises(ValueError, match="pass --evalkit PATH"):
        score(run_dir)
