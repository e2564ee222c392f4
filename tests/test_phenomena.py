"""The phenomena measures (cosjax.analysis.phenomena): candidate presence on constructed
superpositions, the threshold sweep, commit step on hand-made sequences, the paired bootstrap,
the per-length summary."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from test_tasks_multi import draw

from cosjax.analysis import phenomena as P
from cosjax.analysis import summaries
from cosjax.data import maze_long, maze_routes

SEEDS = range(12)


def routes_frames(seed: int, held_out: bool = False):
    """(case, final frame with route 0 only, with route 1 only), float32 0..255."""
    case = maze_routes.generate(seed, held_out)
    routes = case.solution["routes"]
    return case, draw(case, routes[0]).astype(np.float32), draw(case, routes[1]).astype(np.float32)


@pytest.mark.parametrize("held_out", [False, True])
def test_candidates_on_superpositions(held_out):
    for seed in SEEDS:
        case, a, b = routes_frames(seed, held_out)
        blank = case.first_frame
        assert P.candidates_present(a, case) == 1 and P.candidates_present(b, case) == 1
        assert P.candidates_present(blank, case) == 0
        half = 0.5 * a + 0.5 * b  # each route's own cells at intensity 0.5
        assert P.candidates_present(half, case, threshold=0.25) == 2
        assert P.candidates_present(half, case, threshold=0.6) == 0  # symmetric: both or neither
        lean = 0.7 * a + 0.3 * b
        assert P.candidates_present(lean, case, threshold=0.25) == 2
        assert P.candidates_present(lean, case, threshold=0.6) == 1
        assert P.shown_answer(lean, case) == 0 and P.shown_answer(half, case) == -1
        assert P.shown_answer(blank, case) == -1 and P.shown_answer(b, case) == 1
        np.testing.assert_allclose(P.answer_strength(half, case)[:2], 0.5, atol=1e-5)
        np.testing.assert_allclose(P.answer_strength(a, case)[0], 1.0, atol=1e-5)
        both = draw(case, *case.solution["routes"])
        assert P.candidates_present(both, case) == len(case.solution["routes"])


def test_candidates_read_the_last_frame_of_a_video_and_steps():
    case, a, b = routes_frames(3)
    video = case.video.astype(np.float32)  # its last frame draws the case's own route
    drawn = [[tuple(c) for c in r] for r in case.solution["routes"]].index(
        [tuple(c) for c in case.solution["path"]]
    )
    assert P.candidates_present(video, case) == 1 and P.shown_answer(video, case) == drawn
    assert P.candidates_present(video, case, frame=0) == 0
    steps = np.stack([case.first_frame.astype(np.float32), 0.5 * a + 0.5 * b, 0.8 * a + 0.2 * b, a])
    np.testing.assert_array_equal(P.candidates_per_step(steps, case), [0, 2, 1, 1])
    videos = np.repeat(steps[:, None], 3, axis=1)  # [S, F, H, W, 3]
    np.testing.assert_array_equal(P.candidates_per_step(videos, case), [0, 2, 1, 1])
    sweep = P.candidates_sweep(steps, case, [0.1, 0.25, 0.5, 0.9])
    assert sweep.shape == (4, 4)
    want = [[0, 2, 2, 1], [0, 2, 1, 1], [0, 2, 1, 1], [0, 0, 0, 1]]  # at 0.9 even 0.8 A is absent
    np.testing.assert_array_equal(sweep, want)
    assert (np.diff(sweep, axis=0) <= 0).all()  # a higher threshold never finds more
    with pytest.raises(ValueError, match="expected"):
        P.candidates_per_step(steps[0], case)


def test_candidates_single_answer_family():
    for seed in SEEDS:
        case = maze_long.generate(seed)
        assert P.candidates_present(case.video, case) == 1
        assert P.candidates_present(case.first_frame, case) == 0
        faint = 0.5 * case.final_frame.astype(np.float32) + 0.5 * case.first_frame
        assert P.candidates_present(faint, case) == 1
        assert P.candidates_present(faint, case, threshold=0.6) == 0
        assert P.candidates_present(case.video[len(case.video) // 2], case) == 0  # half drawn: not all cells


def test_distinguishing_boxes():
    case, _, _ = routes_frames(0)
    own = P.distinguishing_boxes(case)
    assert len(own) == len(case.solution["routes"]) and all(own)
    for i, boxes in enumerate(own):
        for j, other in enumerate(case.solution["answer_boxes"]):
            if j != i:
                assert not set(boxes) & {tuple(b) for b in other}
    with pytest.raises(ValueError, match="answer_boxes"):
        P.distinguishing_boxes(dataclasses.replace(case, solution={}))
    twins = dict(case.solution, answer_boxes=[case.solution["answer_boxes"][0]] * 2)
    with pytest.raises(ValueError, match="no distinguishing"):
        P.distinguishing_boxes(dataclasses.replace(case, solution=twins))


def test_commit_step():
    assert P.commit_step([False, False, True, True]) == 2
    assert P.commit_step([True, True, True]) == 0
    assert P.commit_step([True, False, True]) == 2
    assert P.commit_step([True, True, False]) == 3  # never committed: S
    assert P.commit_step([False]) == 1 and P.commit_step([True]) == 0
    assert P.commit_step(np.array([0.0, 1.0, 1.0]) >= 0.5) == 1
    with pytest.raises(ValueError):
        P.commit_step([])
    solved = [True, True, True, True]
    assert P.commit_step(P.with_final_answer(solved, [0, 1, 1, 1])) == 1  # switched answer at step 1
    assert P.commit_step(P.with_final_answer(solved, [1, 1, 1, 1])) == 0
    assert P.commit_step(P.with_final_answer([False, True, True], [1, 1, 1])) == 1
    assert P.commit_step(P.with_final_answer(solved, [0, 0, 0, -1])) == 4  # no answer shown at the end
    with pytest.raises(ValueError):
        P.with_final_answer([True, False], [0])


def test_paired_bootstrap_gain():
    plain = np.random.default_rng(1).integers(0, 5, size=50) / 4.0  # scores exact in binary
    assert P.paired_bootstrap_gain(plain, plain) == P.Gain(0.0, 0.0, 0.0, 50)  # zero-width at 0
    assert P.paired_bootstrap_gain(plain, plain + 1.0) == P.Gain(1.0, 1.0, 1.0, 50)  # constant +1: [1, 1]
    solved_plain = np.zeros(40)
    solved_ens = (np.arange(40) % 4 == 0).astype(float)  # 10 of 40 cases gained
    g = P.paired_bootstrap_gain(solved_plain, solved_ens, n=4000, seed=3)
    assert g.mean == 0.25 and g.cases == 40 and g.low < 0.25 < g.high
    half_width = 1.96 * np.sqrt(0.25 * 0.75 / 40)  # the normal approximation of the same interval
    assert abs((g.high - g.low) / 2 - half_width) < 0.02
    assert g == P.paired_bootstrap_gain(solved_plain, solved_ens, n=4000, seed=3)  # deterministic
    noisy = np.random.default_rng(2).normal(0.1, 1.0, size=60)
    assert P.paired_bootstrap_gain(np.zeros(60), noisy, seed=3) != P.paired_bootstrap_gain(
        np.zeros(60), noisy, seed=4
    )  # the seed is the only randomness
    assert P.paired_bootstrap_gain(solved_plain, solved_ens, level=0.5).high < g.high
    with pytest.raises(ValueError):
        P.paired_bootstrap_gain([1.0, 2.0], [1.0])
    with pytest.raises(ValueError):
        P.paired_bootstrap_gain([], [])


def test_trajectory_measures():
    case, a, b = routes_frames(5)
    blank = case.first_frame.astype(np.float32)
    steps = np.stack([blank, 0.5 * a + 0.5 * b, 0.3 * a + 0.7 * b, 0.9 * a + 0.1 * b, a])
    scores = [maze_routes.score(case, s) for s in steps]
    out = P.trajectory_measures(steps, case, scores)
    assert out["candidates"] == [0, 2, 2, 1, 1]
    assert out["answer"] == [-1, -1, 1, 0, 0]  # switched from route 1 to route 0
    assert out["solved"] == [False, False, False, True, True] and out["commit_step"] == 3
    assert out["sweep"][0.25] == out["candidates"] and out["sweep"][0.75] == [0, 0, 0, 1, 1]
    json.dumps(out)
    with pytest.raises(ValueError, match="scores"):
        P.trajectory_measures(steps, case, scores[:2])


def test_length_summary_parts_step0_from_final_per_length():
    def row(group, moves, final, step0, commit, split="in_domain"):
        return {
            "group": group,
            "split": split,
            "moves": moves,
            "final_score": final,
            "x0_scores": [step0, final],
            "commit_step": commit,
        }

    rows = [
        row("maze_long", 16, 1.0, 1.0, 0),
        row("maze_long", 16, 0.9, 0.2, 1),
        row("maze_long", 16, 0.1, 0.0, None, "held_out"),
        row("maze_long", 8, 0.6, 0.7, 0),
        row("maze_long", 8, 0.4, 0.6, None),
        row("maze", 4, 1.0, 0.3, 1),
        {
            "group": "move",
            "split": "in_domain",
            "moves": None,
            "final_score": 1.0,
            "x0_scores": [1.0, 1.0],
            "commit_step": 0,
        },  # no path length: left out
        row("maze", 5, None, None, None),  # no scorer: left out
    ]
    out = summaries.length_summary(rows, 0.5)
    assert list(out) == ["maze", "maze_long"]
    assert list(out["maze_long"]) == ["8", "16"]  # increasing length, not string order
    long16 = out["maze_long"]["16"]
    assert long16["cases"] == 3 and long16["splits"] == ["held_out", "in_domain"]
    assert long16["solved"] == pytest.approx(2 / 3) and long16["x0_solved_step0"] == pytest.approx(1 / 3)
    assert long16["median_commit"] == 0.5
    assert out["maze_long"]["8"] == {
        "cases": 2,
        "solved": 0.5,
        "x0_solved_step0": 1.0,
        "median_commit": 0.0,
        "splits": ["in_domain"],
    }
    assert out["maze"] == {
        "4": {
            "cases": 1,
            "solved": 1.0,
            "x0_solved_step0": 0.0,
            "median_commit": 1.0,
            "splits": ["in_domain"],
        }
    }
    assert summaries.length_summary(rows[-2:], 0.5) == {}
