"""The labelled figures (cosjax.analysis.plots) and the summaries they draw (cosjax.analysis.summaries)."""

from __future__ import annotations

import imageio.v3 as iio
import numpy as np
import pytest

from cosjax.analysis import plots
from cosjax.analysis.summaries import candidate_summary, gains, step_means, subsets


class FakeWriter:
    def __init__(self):
        self.images = {}

    def image(self, tag, image, step):
        self.images[tag] = (np.asarray(image), step)


def test_a_curve_figure_is_written_as_a_png_of_its_stated_size_and_logged(tmp_path):
    fig = plots.curves_figure([0, 1, 2], {"a": [0.1, None, 0.9], "b": [1, 1, 1]}, "step", "score", "t")
    writer = FakeWriter()
    image = plots.save(fig, tmp_path / "sub" / "curve.png", writer, "plots/curve")
    width, height = plots.SIZE
    assert image.shape == (height, width, 3) and image.dtype == np.uint8
    np.testing.assert_array_equal(iio.imread(tmp_path / "sub" / "curve.png"), image)
    assert writer.images["plots/curve"][0].shape == (height, width, 3)
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["curve.png"]  # no temp file left
    ax = fig.axes[0]
    assert ax.get_xlabel() == "step" and ax.get_ylabel() == "score" and ax.get_title() == "t"


def test_the_labelled_grid_has_one_labelled_row_per_step_and_a_column_per_frame():
    videos = np.zeros((3, 9, 32, 32, 3), np.uint8)
    steps, sigmas = [0, 5, 19], [0.999, 0.75, 0.05]
    labels = plots.grid_row_labels(steps, sigmas)
    assert labels == ["step 0  σ=0.999", "step 5  σ=0.750", "step 19  σ=0.050"]
    fig = plots.step_frame_grid_figure(videos, steps, sigmas, "grid", scale=2)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == labels
    assert [t.get_text() for t in ax.get_xticklabels()] == [str(f) for f in range(9)]
    assert ax.get_xlabel() == "frame index"
    image = plots.render(fig)
    assert image.shape == (3 * (64 + 1) + 100, 9 * (64 + 1) + 170, 3)  # the grid pixel for pixel + margins
    with pytest.raises(ValueError, match="rows"):
        plots.step_frame_grid_figure(videos, [0, 1], [1.0, 0.5], "grid")
    with pytest.raises(ValueError, match="sigmas"):
        plots.grid_row_labels([0, 1], [1.0])


def test_heatmap_has_a_colour_bar_and_bars_mark_the_scored_frame():
    fig = plots.heatmap_figure(
        np.arange(6.0).reshape(2, 3), ["l0", "l1"], ["s0", "s1", "s2"], "x", "y", "t", "c"
    )
    assert len(fig.axes) == 2 and fig.axes[1].get_ylabel() == "c"  # the colour bar, labelled
    with pytest.raises(ValueError, match="labels"):
        plots.heatmap_figure(np.zeros((2, 2)), ["a"], ["b", "c"], "x", "y", "t", "c")
    fig = plots.bars_figure(
        ["0", "1", "2"], [0.1, None, 0.8], "frame", "drop", "t", marked=[2], mark_label="m"
    )
    bars = fig.axes[0].patches
    assert bars[2].get_hatch() == "//" and bars[0].get_hatch() is None
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["m"]
    fig = plots.interval_figure(["a", "b"], [0.1, 0.0], [0.0, -0.2], [0.3, 0.2], "gain", "t")
    assert plots.render(fig).shape[:2] == (plots.SIZE[1] + 60, plots.SIZE[0])


def _row(group, split, **fields):
    return {"group": group, "split": split, **fields}


def test_gains_carry_a_bootstrap_interval_around_the_mean_per_family_and_split():
    rng = np.random.default_rng(0)
    rows = [
        _row(g, s, plain=float(rng.random() < 0.5), ens=float(rng.random() < 0.7))
        for g in ("maze", "move")
        for s in ("in_domain", "held_out")
        for _ in range(10)
    ]
    out = gains(rows, "plain", "ens")
    assert set(out) == set(subsets(rows, crossed=True))
    assert {"overall", "split/held_out", "group/maze", "maze@in_domain", "move@held_out"} <= set(out)
    for g in out.values():
        assert g["low"] <= g["mean"] <= g["high"] and -1.0 <= g["low"] and g["high"] <= 1.0
    assert out["overall"]["cases"] == 40 and out["maze@in_domain"]["cases"] == 10
    same = gains([_row("maze", "in_domain", plain=1.0, ens=1.0)] * 3, "plain", "ens")["overall"]
    assert same == {"mean": 0.0, "low": 0.0, "high": 0.0, "cases": 3}


def test_candidate_summary_counts_per_step_and_the_final_answers():
    def multi(candidates, commit):
        return {
            "candidates": candidates,
            "sweep": {"0.15": candidates, "0.4": [0, 0, 0]},
            "commit_step": commit,
        }

    rows = [
        _row("maze_routes", "in_domain", multi=multi([2, 2, 1], 2), final_candidates=1),
        _row("maze_routes", "in_domain", multi=multi([0, 1, 1], 1), final_candidates=1),
        _row("maze_routes", "in_domain", multi=multi([1, 2, 2], 3), final_candidates=2),
        _row("maze", "in_domain"),  # single answer: not counted
    ]
    out = candidate_summary(rows)
    assert out["cases"] == 3 and out["threshold"] == 0.25
    np.testing.assert_allclose(out["mean_by_step"], [1.0, 5 / 3, 4 / 3])
    np.testing.assert_allclose(out["two_or_more_by_step"], [1 / 3, 2 / 3, 1 / 3])
    assert set(out["sweep"]) == {"0.15", "0.4"} and out["sweep"]["0.4"] == [0.0, 0.0, 0.0]
    assert out["final_exactly_one"] == pytest.approx(2 / 3)
    assert out["commit_step"] == {"median": 2.0, "at_step_0": 0.0, "never": 1}
    assert candidate_summary(rows[3:]) == {"cases": 0}
    assert step_means([{"v": [1, None]}, {"v": [0, 1]}, {"v": None}], lambda r: r["v"]) == [0.5, 1.0]
