"""Every experiment end to end on a tiny converted Wan2.2 I2V repo and a tiny fake VBVR-Bench folder,
with the ensemble's videos scored by the stand-in EvalKit script."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import test_vbvr_bench
from test_convert_components import repo  # noqa: F401  (fixture)
from test_vbvr_bench import make_bench

import cosjax as cj
import experiments
from cosjax.data.vbvr_bench import BenchDataError

pytestmark = pytest.mark.filterwarnings("ignore:os.fork:RuntimeWarning")
FAKE_EVALKIT = Path(__file__).parent / "fake_evalkit"
STEPS = 2


@pytest.fixture(scope="module")
def model(repo):  # noqa: F811
    return str(cj.convert_checkpoint(repo, repo.parent / "converted-exp", dtype="float32", progress=False))


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    """Two samples per task, both 9-frame GT videos (so a task's samples can be swapped)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(test_vbvr_bench, "GT_FRAMES", (9, 9))
        return make_bench(tmp_path_factory.mktemp("bench") / "VBVR-Bench-Data")


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
