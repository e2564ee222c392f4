"""The synthetic VBVR-format task families: determinism, layout, scorers, held-out splits, writer."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cosjax import data as D
from cosjax.data import maze, move, pattern, tasks
from cosjax.data.render import COLOURS

NAMES = sorted(tasks.ALL_FAMILIES)
SEEDS = range(12)


def blur(video: np.ndarray, sigma: float = 0.7) -> np.ndarray:
    """float32: a separable Gaussian blur over H and W of uint8 [..., H, W, 3] (edge padded)."""
    x = np.arange(-2, 3)
    k = np.exp(-0.5 * (x / sigma) ** 2)
    k /= k.sum()
    out = video.astype(np.float32)
    for axis in (-3, -2):
        pad = [(0, 0)] * out.ndim
        pad[axis] = (2, 2)
        padded = np.pad(out, pad, mode="edge")
        n = out.shape[axis]
        out = sum(w * np.take(padded, np.arange(i, i + n), axis=axis) for i, w in enumerate(k))
    return out


def perturb(video: np.ndarray, seed: int) -> np.ndarray:
    """float32 0..255: blurred, then Gaussian noise of sigma 10 (a diffusion model's output, roughly)."""
    noise = np.random.default_rng(seed).normal(0.0, 10.0, video.shape)
    return np.clip(blur(video) + noise, 0, 255)


def with_last(case: D.Case, frame: np.ndarray) -> np.ndarray:
    """uint8 [F, 32, 32, 3]: the case's video with its last frame replaced."""
    video = case.video.copy()
    video[-1] = frame
    return video


@pytest.mark.parametrize("name", NAMES)
def test_deterministic(name):
    a, b = D.generate(name, 5), D.generate(name, 5)
    np.testing.assert_array_equal(a.video, b.video)
    assert a.solution == b.solution and a.prompt == b.prompt
    assert not np.array_equal(a.video, D.generate(name, 6).video)
    assert not np.array_equal(a.video, D.generate(name, 5, held_out=True).video)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("held_out", [False, True])
def test_layout(name, held_out):
    for seed in SEEDS:
        case = D.generate(name, seed, held_out)
        assert case.video.shape == (D.FRAMES, D.SIZE, D.SIZE, 3) and case.video.dtype == np.uint8
        np.testing.assert_array_equal(case.first_frame, case.video[0])
        np.testing.assert_array_equal(case.final_frame, case.video[-1])
        assert not np.array_equal(case.first_frame, case.final_frame)
        assert (case.family, case.seed, case.held_out) == (name, seed, held_out)
        assert D.PROMPTS[case.prompt_id] == case.prompt
        assert case.prompt_id in D.family(name).prompt_ids


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("held_out", [False, True])
def test_scorer_accepts_ground_truth(name, held_out):
    for seed in SEEDS:
        case = D.generate(name, seed, held_out)
        assert D.score(case, case.video) == 1.0
        assert D.score(case, case.final_frame) == 1.0
        assert D.score(case, perturb(case.video, seed)) >= 0.99


@pytest.mark.parametrize("name", NAMES)
def test_scorer_rejects_nothing_solved(name):
    for seed in SEEDS:
        case = D.generate(name, seed)
        still = np.repeat(case.first_frame[None], D.FRAMES, axis=0)
        assert D.score(case, still) <= 0.3
        assert D.score(case, perturb(still, seed)) <= 0.3


def test_maze_scorer_rejects_wrong_paths():
    for seed in SEEDS:
        case = maze.generate(seed)
        path = {tuple(c) for c in case.solution["path"]}
        off = [(r, c) for r in range(maze.N) for c in range(maze.N) if (r, c) not in path]
        wrong = case.first_frame.copy()
        for cell in off[: case.solution["moves"] - 1]:
            maze.GRID.paint(wrong, *cell, maze.PATH)
        assert maze.score(case, with_last(case, wrong)) == 0.0
        flood = case.final_frame.copy()
        for cell in off:
            maze.GRID.paint(flood, *cell, maze.PATH)
        for a, b in maze.LINKS:  # and every wall crossing: the whole maze painted
            flood[maze.link_box(a, b)] = maze.PATH
        assert maze.score(case, with_last(case, flood)) <= 0.3
        crossing = case.final_frame.copy()  # the true path plus one crossing through a closed wall
        right, down = (np.asarray(case.solution[k]) for k in ("right", "down"))
        closed = next((a, b) for a, b in maze.LINKS if not maze._open(right, down, a, b))
        crossing[maze.link_box(*closed)] = maze.PATH
        assert maze.score(case, with_last(case, crossing)) < 1.0
        half = case.video[D.FRAMES // 2]
        assert 0.2 <= maze.score(case, with_last(case, half)) <= 0.8


def test_move_scorer_rejects_wrong_targets():
    for seed in SEEDS:
        case = move.generate(seed)
        sol = case.solution
        rings = [(tuple(cell), ring) for cell, ring in sol["rings"]]
        start, target = sol["start"], tuple(sol["target"])
        other = rings[0][0] if sol["rule"] == "mirror" else (start[0], move.N - 1 - start[1])
        assert other != target  # the two rules always disagree, so the prompt decides
        wrong = move.render(rings, sol["colour"], (other[0] * move.CELL + 2, other[1] * move.CELL + 2))
        assert move.score(case, with_last(case, wrong)) == 0.0
        both = case.final_frame.copy()
        move.GRID.paint(both, *start, COLOURS[sol["colour"]])
        assert move.score(case, with_last(case, both)) == 0.5


def test_pattern_scorer_rejects_wrong_colours():
    for seed in SEEDS:
        case = pattern.generate(seed)
        rows, missing = case.solution["rows"], case.solution["missing"]
        wrong = case.final_frame.copy()
        for r, row in enumerate(rows):
            for c in range(pattern.COLS - missing, pattern.COLS):
                pattern.GRID.paint(wrong, r, c, COLOURS[(row[c] + 1) % len(COLOURS)])
        assert pattern.score(case, with_last(case, wrong)) == 0.0


def test_held_out_is_out_of_distribution():
    """Over 200 seeds, a property marks every held-out case and no in-domain case."""
    properties = {
        "maze": lambda c: c.solution["moves"] >= maze.HELD_OUT_MOVES[0],
        "move": lambda c: move.quadrant(c.solution["target"]) == move.HELD_QUADRANT[c.solution["colour"]],
        "pattern": lambda c: 4 in c.solution["periods"],
    }
    for name, prop in properties.items():
        assert not any(prop(D.generate(name, s)) for s in range(200)), name
        assert all(prop(D.generate(name, s, held_out=True)) for s in range(200)), name
    rules = {move.generate(s).solution["rule"] for s in range(50)}
    assert rules == {"colour", "mirror"}


@pytest.mark.parametrize("name", NAMES)
def test_make_dataset(name):
    data = D.make_dataset(name, 16, seed0=100)
    assert data.first_frames.shape == (16, D.SIZE, D.SIZE, 3) and data.first_frames.dtype == np.uint8
    assert data.videos.shape == (16, D.FRAMES, D.SIZE, D.SIZE, 3) and data.videos.dtype == np.uint8
    assert data.prompt_ids.shape == (16,) and data.prompt_ids.dtype == np.int32
    np.testing.assert_array_equal(data.first_frames, data.videos[:, 0])
    np.testing.assert_array_equal(data.videos[3], D.generate(name, 103).video)
    assert set(data.prompt_ids.tolist()) <= set(D.family(name).prompt_ids)


@pytest.mark.parametrize("name", NAMES)
def test_write_vbvr_case(name, tmp_path):
    import imageio.v2 as imageio

    case = D.generate(name, 7, held_out=True)
    folder = D.write_vbvr_case(case, tmp_path / name / "00000")
    for file in ("first_frame.png", "final_frame.png", "ground_truth.mp4", "prompt.txt"):
        assert (folder / file).is_file(), file
    np.testing.assert_array_equal(imageio.imread(folder / "first_frame.png")[..., :3], case.first_frame)
    np.testing.assert_array_equal(imageio.imread(folder / "final_frame.png")[..., :3], case.final_frame)
    assert (folder / "prompt.txt").read_text() == case.prompt
    video = D.read_video(folder / "ground_truth.mp4")
    assert video.shape == (D.FRAMES, D.SIZE, D.SIZE, 3)
    assert D.score(case, video) >= 0.99  # lossy H.264 (chroma subsampled) still scores
    meta = json.loads((folder / "metadata.json").read_text())
    again = D.generate(meta["family"], meta["seed"], meta["held_out"])
    np.testing.assert_array_equal(again.video, case.video)
