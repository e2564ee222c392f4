"""Every experiment end to end on a tiny random toy model: outputs, TensorBoard, resume, CLI."""

from __future__ import annotations

import dataclasses
import json

import jax
import numpy as np
import pytest

import experiments
from cosjax.data.tasks import FAMILIES
from cosjax.models.dit import init_params
from cosjax.runs import ConfigMismatchError
from cosjax.toy.codec import prompt_embeddings
from cosjax.toy.config import toy_dit_config
from cosjax.toy.model_file import save_toy

STEPS = 3


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """A random toy model folder: dim 16, 2 layers, patch (1, 8, 8) -> 9 x 4 x 4 tokens."""
    cfg = toy_dit_config(dim=16, num_layers=2, num_heads=2, patch_size=(1, 8, 8), text_dim=8)
    params = init_params(cfg, jax.random.key(0))
    table = prompt_embeddings(0, 4, cfg.text_len, cfg.text_dim)
    path = tmp_path_factory.mktemp("toy") / "model"
    return str(save_toy(path, cfg, params, table, (9, 32, 32), sampling={"steps": STEPS}))


def events(folder):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    acc.Reload()
    return acc


def results(out):
    return json.loads((out / "results.json").read_text())


def run(name, toy, out, **overrides):
    module = experiments.get(name)
    config = module.Config(**{"cases": 1, "batch_size": 4, **overrides})
    return module.run(config, model=toy, out=out, progress=False)


def test_trajectory(toy, tmp_path):
    out = tmp_path / "run"
    summary = run("trajectory", toy, out, data="toy:maze,move,pattern")  # single-answer families
    res = results(out)
    assert len(res["cases"]) == 3  # one per family
    for case in res["cases"]:
        assert len(case["x0_scores"]) == STEPS and case["case"] in {
            "maze-in-100000",
            "move-in-100000",
            "pattern-in-100000",
        }
        grid = __import__("imageio.v3").v3.imread(out / "cases" / case["case"] / "grid.png")
        assert grid.shape == (STEPS * 33 * 4, 9 * 33 * 4, 3)  # rows = steps, columns = frames, x4
        assert (out / "cases" / case["case"] / "final.mp4").stat().st_size > 0
    assert set(summary["x0_score_by_step"]) == set(range(STEPS))
    acc = events(out / "tb")
    assert len(acc.Scalars("x0_score/overall")) == STEPS
    assert any(tag.startswith("trajectory/maze/") for tag in acc.Tags()["images"])
    assert any(tag.startswith("final/") for tag in acc.Tags()["images"])  # GIF videos
    for name in ("overall", "group/maze", "split/in_domain"):
        solved = summary["solved_by_step"][name]
        assert len(solved) == STEPS and all(0.0 <= v <= 1.0 for v in solved)
    assert summary["candidates"]["overall"] == {"cases": 0}  # no multi-answer family here
    assert [f["file"] for f in summary["figures"]][:2] == [
        "plots/score_vs_step.png",
        "plots/solved_vs_step.png",
    ]
    assert len(acc.Scalars("solved/overall")) == STEPS and "plots/score_vs_step" in acc.Tags()["images"]
    maze = next(c for c in res["cases"] if c["group"] == "maze")
    assert list(summary["by_length"]) == ["maze"]  # move and pattern have no path length
    (length,) = summary["by_length"]["maze"]
    assert int(length) == maze["moves"] and summary["by_length"]["maze"][length]["cases"] == 1
    assert summary["by_length"]["maze"][length]["solved"] == float(maze["final_score"] >= 0.5)
    assert "plots/solved_vs_length.png" in [f["file"] for f in summary["figures"]]
    assert (out / "plots" / "solved_vs_length.png").stat().st_size > 0


def test_trajectory_counts_candidates_on_multi_answer_cases(toy, tmp_path):
    out = tmp_path / "run"
    summary = run("trajectory", toy, out, data="toy:maze_routes@both", thresholds=(0.15, 0.25, 0.4))
    rows = results(out)["cases"]
    assert len(rows) == 2 and all(len(r["multi"]["candidates"]) == STEPS for r in rows)
    assert all(0 <= r["final_candidates"] <= 3 for r in rows)
    entry = summary["candidates"]["overall"]
    assert entry["cases"] == 2 and set(entry["sweep"]) == {"0.15", "0.25", "0.4"}
    assert entry["sweep"]["0.25"] == entry["mean_by_step"]  # the default threshold is in the sweep
    for t in ("0.15", "0.25"):  # a lower threshold never counts fewer candidates
        assert all(a >= b for a, b in zip(entry["sweep"][t], entry["sweep"]["0.4"], strict=True))
    assert all(0.0 <= v <= 1.0 for v in entry["two_or_more_by_step"])
    assert 0 <= entry["commit_step"]["median"] <= STEPS and 0.0 <= entry["final_exactly_one"] <= 1.0
    assert summary["candidates"]["split/held_out"]["cases"] == 1
    plot = __import__("imageio.v3").v3.imread(out / "plots" / "candidates_vs_step.png")
    assert plot.shape == (400, 640, 3)
    grid = __import__("imageio.v3").v3.imread(out / "cases" / "maze_routes-in-100000" / "grid_labelled.png")
    assert grid.shape == (STEPS * 65 + 100, 9 * 65 + 170, 3)  # one row per step, one column per frame
    acc = events(out / "tb")
    assert len(acc.Scalars("candidates/overall")) == STEPS
    assert any(tag.startswith("trajectory_labelled/maze_routes/") for tag in acc.Tags()["images"])


def test_noise_perturbation(toy, tmp_path):
    out = tmp_path / "run"
    run("noise-perturbation", toy, out, data="toy:move")
    (case,) = results(out)["cases"]
    assert len(case["step_scores"]) == STEPS and len(case["frame_scores"]) == 9
    assert all(0.0 <= a <= 1.0 for a in case["step_agreement"] + case["frame_agreement"])
    # noise at step 0 replaces the initial noise by other noise: the video changes
    assert case["step_agreement"][0] < 1.0
    acc = events(out / "tb")
    assert [e.step for e in acc.Scalars("agreement_step/overall")] == list(range(STEPS))
    assert len(acc.Scalars("agreement_frame/overall")) == 9
    overall = results(out)["summary"]["by_split"]["overall"]
    assert overall["scored_frame"] == 8 and overall["drop_frame_scored"] == overall["drop_frame"][8]
    assert overall["drop_frame_other"] == pytest.approx(np.mean(overall["drop_frame"][:8]))
    assert overall["drop_step_mean"] == pytest.approx(np.mean(overall["drop_step"]))
    for name in ("drop_vs_step", "drop_vs_frame"):
        assert (out / "plots" / f"{name}.png").is_file() and f"plots/{name}" in acc.Tags()["images"]


def test_trajectory_case_files_limits_the_per_case_files_not_the_records(toy, tmp_path):
    out = tmp_path / "run"
    run("trajectory", toy, out, data="toy:move", cases=2, case_files=1, labelled_grids=0)
    rows = results(out)["cases"]
    assert [r["case"] for r in rows] == ["move-in-100000", "move-in-100001"]
    assert all(len(r["x0_scores"]) == STEPS for r in rows)
    assert sorted(p.parent.name for p in (out / "cases").glob("*/grid.png")) == ["move-in-100000"]
    assert not (out / "cases" / "move-in-100001" / "final.mp4").exists()


def test_information_flow_is_zero_before_the_perturbation(toy, tmp_path):
    out = tmp_path / "run"
    summary = run("information-flow", toy, out, data="toy:move", perturb_steps=(1, 2))
    d = np.asarray(results(out)["cases"][0]["dissimilarity"])  # [P, S]
    assert d.shape == (2, STEPS)
    # identical computations before step p: CKA = 1 up to float32 rounding
    np.testing.assert_allclose(d[0, :1], 0.0, atol=1e-5)
    np.testing.assert_allclose(d[1, :2], 0.0, atol=1e-5)
    assert d[0, 1] > 1e-3 and d[1, 2] > 1e-3
    assert np.asarray(summary["mean_dissimilarity"]).shape == (2, STEPS)
    run("information-flow", toy, tmp_path / "hidden", data="toy:move", representation="hidden:1")
    with pytest.raises(ValueError, match="hidden:K"):
        run("information-flow", toy, tmp_path / "bad", data="toy:move", representation="layer3")


def test_layer_energy(toy, tmp_path):
    out = tmp_path / "run"
    summary = run("layer-energy", toy, out, data="toy:pattern", energy_steps=(0, 2))
    energy = np.asarray(summary["mean_energy"])
    assert energy.shape == (2, 2) and np.all(energy > 0)
    image = __import__("imageio.v3").v3.imread(out / "cases" / "pattern-in-100000" / "energy_step002.png")
    assert image.shape == (2 * (4 * 8 + 1), 9 * (4 * 8 + 1), 3)  # rows = layers, columns = latent frames
    acc = events(out / "tb")
    assert [e.step for e in acc.Scalars("mean_energy/step002")] == [0, 1]


def test_latent_swap_at_the_last_layer_reproduces_the_alternative(toy, tmp_path):
    """Swapping the last block's output at every step makes every velocity the alternative's, and
    both runs start from the same noise: the output is the alternative's video."""
    out = tmp_path / "run"
    summary = run("latent-swap", toy, out, cases=2, swap_steps=tuple(range(STEPS)))
    rows = results(out)["cases"]
    assert len(rows) == 2 and all(r["alternative"].endswith("-alt") for r in rows)
    for r in rows:
        assert r["distance_to_alternative"][-1] <= 0.05  # decoded uint8 rounding only
        assert r["flipped"][-1] == r["distinct"]
    assert len(summary["flip_share"]) == 2


def test_latent_swap_compares_what_is_drawn_not_the_scene(toy, tmp_path):
    """maze_long's alternative is another maze: the swapped run keeps the case's first frame (its
    walls), so it flips to the alternative's path only in the change it draws, not in raw pixels."""
    out = tmp_path / "run"
    run("latent-swap", toy, out, data="toy:maze_long", cases=2, swap_steps=tuple(range(STEPS)))
    for r in results(out)["cases"]:
        assert r["distinct"] and r["flipped"][-1]  # raw last frames: nearer the case's (its walls)


def test_latent_swap_per_step_matches_the_window_of_one_step(toy, tmp_path):
    """A window of one step swapped whole and that step swapped alone are the same run; over a longer
    window the per-step heatmap has one row per layer and one column per step."""
    out = tmp_path / "one"
    summary = run("latent-swap", toy, out, cases=2, swap_steps=(1,), per_step=True)
    for r in results(out)["cases"]:
        assert [row[0] for row in r["flipped_per_step"]] == r["flipped"]
    assert np.asarray(summary["flip_share_per_step"]).shape == (2, 1)
    summary = run("latent-swap", toy, tmp_path / "two", cases=2, swap_steps=(0, STEPS - 1), per_step=True)
    assert np.asarray(summary["flip_share_per_step"]).shape == (2, 2)
    assert (tmp_path / "two" / "plots" / "flip_layer_x_step.png").exists()


def test_ensemble_of_one_seed_is_the_plain_sampler(toy, tmp_path):
    out = tmp_path / "run"
    run("ensemble", toy, out, seeds=1)
    rows = results(out)["cases"]
    assert len(rows) == 2 * len(FAMILIES)  # every family x (in-domain, held-out)
    assert {r["split"] for r in rows} == {"in_domain", "held_out"}
    for r in rows:
        assert r["ensemble_score"] == r["plain_score"]
    one = results(out)["summary"]["gain"]
    assert one["solved"]["overall"] == {"mean": 0.0, "low": 0.0, "high": 0.0, "cases": 2 * len(FAMILIES)}
    summary = run("ensemble", toy, tmp_path / "three", seeds=3, data="toy:move")
    assert set(summary["plain_score"]) == {"overall", "split/in_domain", "group/move"}
    assert set(summary["gain"]["solved"]) == {"overall", "split/in_domain", "group/move", "move@in_domain"}
    for measure in ("solved", "score"):
        for g in summary["gain"][measure].values():
            assert g["low"] <= g["mean"] <= g["high"] and g["cases"] == 1
    assert "95% interval" in summary["gain_table"]
    assert (tmp_path / "three" / "plots" / "ensemble_gain.png").is_file()


def test_kill_and_resume_gives_the_uninterrupted_results(toy, tmp_path):
    settings = dict(data="toy:move,pattern", cases=2, batch_size=1)
    full = tmp_path / "full"
    run("noise-perturbation", toy, full, **settings)
    killed = tmp_path / "killed"
    module = experiments.get("noise-perturbation")
    config = module.Config(**settings)
    first = module.run(config, model=toy, out=killed, progress=False, stop_after=2)["computed"]
    assert len(first) == 2 and not (killed / "cases" / "pattern-in-01001.json").exists()
    second = module.run(config, model=toy, out=killed, progress=False)["computed"]
    assert set(first).isdisjoint(second) and len(first) + len(second) == 4  # no case done twice
    a, b = results(full), results(killed)
    assert a["cases"] == b["cases"] and a["summary"] == b["summary"]
    with pytest.raises(ConfigMismatchError, match="steps"):
        module.run(dataclasses.replace(config, steps=2), model=toy, out=killed, progress=False)


def test_cli_run_and_errors(toy, tmp_path, capsys):
    from cosjax.cli import main

    out = tmp_path / "cli"
    code = main(
        [
            "run",
            "layer-energy",
            "--model",
            toy,
            "--data",
            "toy:maze",
            "--out",
            str(out),
            "--quiet",
            "cases=1",
            "layers=0",
        ]
    )
    assert code == 0 and (out / "results.json").exists()
    assert "| layer |" in capsys.readouterr().out
    assert main(["run", "layer-energy", "--model", toy, "--out", str(tmp_path / "x"), "nope=1"]) == 2
    assert "unknown setting 'nope'" in capsys.readouterr().err
    assert main(["run", "layer-energy", "--model", toy, "--out", str(tmp_path / "y"), "cases=two"]) == 2
    assert main(["run", "trajectory", "--model", toy, "--data", "cifar"]) == 2
    assert "unknown data source" in capsys.readouterr().err


def test_demo_runs_the_four_experiments_and_reports(toy, tmp_path, capsys):
    from experiments.demo import run_demo

    results = run_demo(out=str(tmp_path / "demo"), cases=1, model=toy, progress=False)
    assert set(results) == {"trajectory", "noise-perturbation", "latent-swap", "ensemble"}
    printed = capsys.readouterr().out
    for heading in ("When does the answer appear?", "Noise at a step vs at a frame", "Ensemble vs plain"):
        assert heading in printed
    for name in results:
        assert (tmp_path / "demo" / name / "results.json").exists()
    headings = ("Several answers at once?", "the scorer reads latent frame", "Which block at which step")
    for heading in (*headings, "95% paired bootstrap"):
        assert heading in printed
    # the latent swap covers the whole trajectory (one block at a few early steps flips nothing)
    assert results["latent-swap"]["swap_steps"] == list(range(STEPS)) and "| every step |" in printed
    figures = demo_page_figures(tmp_path / "demo")
    names = {src.rsplit("/", 1)[-1] for src in figures}
    assert {
        "score_vs_step.png",
        "solved_vs_step.png",
        "candidates_vs_step.png",
        "drop_vs_step.png",
        "drop_vs_frame.png",
        "ensemble_gain.png",
        "grid_labelled.png",
        "flip_vs_layer.png",
        "flip_layer_x_step.png",
    } <= names
    for src, caption in figures.items():
        assert (tmp_path / "demo" / src).is_file(), src  # every figure the page names exists
        assert caption.endswith(".") and len(caption.split()) >= 8, (src, caption)  # with its sentence
    # every family's labelled grid, the issue-14 families included
    grids = [src for src in figures if src.endswith("grid_labelled.png")]
    assert len(grids) == len(__import__("cosjax.data.tasks").data.tasks.FAMILIES)


def demo_page_figures(out) -> dict[str, str]:
    """{img src: its figcaption} of the demo page out/index.html."""
    from html.parser import HTMLParser

    found: dict[str, str] = {}

    class Page(HTMLParser):
        src, caption = None, None

        def handle_starttag(self, tag, attrs):
            if tag == "img":
                assert self.src is None, "an <img> without a caption"
                self.src = dict(attrs)["src"]
            elif tag == "figcaption":
                self.caption = ""

        def handle_data(self, data):
            if self.caption is not None:
                self.caption += data

        def handle_endtag(self, tag):
            if tag == "figcaption":
                found[self.src] = self.caption.strip()
                self.src, self.caption = None, None

    Page().feed((out / "index.html").read_text())
    return found
