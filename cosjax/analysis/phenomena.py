"""Measures of the paper's phenomena (issue 14): candidates per step, commit step, ensemble gain.

Pure numpy on decoded x0-hat videos, per-step verdicts and per-case scores; no model, no I/O.

Candidates read a case's valid answers from its solution (the issue-14 families `maze_routes` and
`maze_long` record them): "answer_boxes", per answer the pixel boxes [y0, y1, x0, x1] of its cells,
and "ink", the RGB colour an answer is drawn in. An answer's distinguishing cells are its boxes that
no other answer of the case has (for a single-answer case, all of its boxes).

Presence rule (exact): the ink intensity of a box in a frame is the mean over the box's pixels of
<x - b, ink - b> / |ink - b|^2, with x the frame's pixel and b the same pixel of the case's first
frame (the puzzle, where no answer is drawn yet): 0 = untouched, 1 = fully inked, 0.5 = halfway
between (what a 50/50 blend of two answers gives on each one's distinguishing cells). An answer is
present in a frame when every one of its distinguishing cells has intensity >= threshold
(default 0.25). Its strength is the minimum intensity over those cells, so present <=> strength >=
threshold, and a threshold sweep is one comparison per threshold.

Frames are uint8 or float on the 0..255 scale (x0-hat decoded as videos, unclipped floats welcome).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

THRESHOLD = 0.25


def distinguishing_boxes(case) -> list[list[tuple[int, int, int, int]]]:
    """Per valid answer, its boxes (y0, y1, x0, x1) that no other answer has, in the recorded order.

    ValueError when the case records no answers or an answer has no distinguishing box (it could
    never be told apart; the issue-14 generators rule that out).
    """
    answers = [
        [tuple(int(v) for v in box) for box in boxes] for boxes in case.solution.get("answer_boxes", [])
    ]
    if not answers:
        raise ValueError(f"case {case.family}/{case.seed} records no answer_boxes")
    out = []
    for i, boxes in enumerate(answers):
        others = {box for j, other in enumerate(answers) if j != i for box in other}
        own = [box for box in boxes if box not in others]
        if not own:
            raise ValueError(f"answer {i} of case {case.family}/{case.seed} has no distinguishing cell")
        out.append(own)
    return out


def _pick_frames(x, frame: int) -> np.ndarray:
    """float32 [S, H, W, 3]: frame `frame` of each step's video [S, F, H, W, 3], or [S, H, W, 3] as is."""
    x = np.asarray(x)
    if x.ndim == 5:
        x = x[:, frame]
    elif x.ndim != 4:
        raise ValueError(f"expected [S, F, H, W, 3] videos or [S, H, W, 3] frames, got shape {x.shape}")
    return x.astype(np.float32)


def answer_strength(x0_frames, case, frame: int = -1) -> np.ndarray:
    """float32 [A]: each valid answer's strength (min ink intensity over its distinguishing cells).

    x0_frames: an x0-hat video [F, H, W, 3] (frame `frame` is read, the last by default, the frame
    the scorers read) or one frame [H, W, 3]; uint8 or float 0..255.
    """
    return answer_strength_steps(np.asarray(x0_frames)[None], case, frame)[0]


def answer_strength_steps(x0_steps, case, frame: int = -1) -> np.ndarray:
    """float32 [S, A]: `answer_strength` of the x0-hat of every step.

    x0_steps: [S, F, H, W, 3] x0-hat videos per step (step 0 = the noisiest) or [S, H, W, 3] frames.
    """
    x = _pick_frames(x0_steps, frame)
    bg = np.asarray(case.first_frame, np.float32)
    ink = np.asarray(case.solution["ink"], np.float32) - bg  # [H, W, 3]: full intensity, per pixel
    norm = np.maximum((ink * ink).sum(-1), 1e-6)
    intensity = ((x - bg) * ink).sum(-1) / norm  # [S, H, W]
    strengths = []
    for boxes in distinguishing_boxes(case):
        cells = [intensity[:, y0:y1, x0:x1].mean((1, 2)) for y0, y1, x0, x1 in boxes]
        strengths.append(np.min(np.stack(cells, 1), 1))
    return np.stack(strengths, 1).astype(np.float32)


def candidates_present(x0_frames, case, threshold: float = THRESHOLD, frame: int = -1) -> int:
    """How many of the case's valid answers are present (module docstring) in an x0-hat video or frame.

    x0_frames: [F, H, W, 3] (frame `frame` read) or [H, W, 3], uint8 or float 0..255.
    """
    return int((answer_strength(x0_frames, case, frame) >= threshold).sum())


def candidates_per_step(x0_steps, case, threshold: float = THRESHOLD, frame: int = -1) -> np.ndarray:
    """int64 [S]: candidates present in the x0-hat of each step ([S, F, H, W, 3] or [S, H, W, 3])."""
    return (answer_strength_steps(x0_steps, case, frame) >= threshold).sum(1)


def candidates_sweep(x0_steps, case, thresholds, frame: int = -1) -> np.ndarray:
    """int64 [T, S]: `candidates_per_step` at each of T thresholds (how the figure moves with it)."""
    strength = answer_strength_steps(x0_steps, case, frame)  # [S, A]
    t = np.asarray(thresholds, np.float32)[:, None, None]
    return (strength[None] >= t).sum(2)


def shown_answer(x0_frames, case, threshold: float = 0.5, frame: int = -1) -> int:
    """Index of the only answer present at `threshold`, or -1 when none or several are present."""
    present = np.flatnonzero(answer_strength(x0_frames, case, frame) >= threshold)
    return int(present[0]) if len(present) == 1 else -1


def with_final_answer(solved_per_step, answer_per_step) -> np.ndarray:
    """bool [S]: solved at step s and with the answer the last step shows (answer ids int [S], -1 =
    none), the per-step verdict `commit_step` wants for multi-answer cases."""
    solved = np.asarray(solved_per_step, bool)
    answer = np.asarray(answer_per_step)
    if solved.shape != answer.shape or solved.ndim != 1:
        raise ValueError(f"expected two [S] arrays, got {solved.shape} and {answer.shape}")
    return solved & (answer == answer[-1]) & (answer[-1] >= 0)


def commit_step(solved_per_step) -> int:
    """The first step from which the x0-hat is solved (with the final answer) and stays so.

    solved_per_step: bool [S], step 0 = the noisiest; pass `with_final_answer(...)` for multi-answer
    cases. Returns s in 0 .. S - 1 with solved[s:] all true and solved[s - 1] false (or s = 0);
    S when the last step is unsolved (never committed: it sorts after every committed case, so a
    median over cases stays defined and counts such cases as late). ValueError on an empty array.
    """
    solved = np.asarray(solved_per_step, bool)
    if solved.ndim != 1 or solved.size == 0:
        raise ValueError(f"expected a non-empty [S] array, got shape {solved.shape}")
    unsolved = np.flatnonzero(~solved)
    return 0 if unsolved.size == 0 else int(unsolved[-1]) + 1


class Gain(NamedTuple):
    """Mean paired gain (ensemble - plain) over cases and its bootstrap interval [low, high]."""

    mean: float
    low: float
    high: float
    cases: int


def paired_bootstrap_gain(plain, ensemble, n: int = 10000, seed: int = 0, level: float = 0.95) -> Gain:
    """Mean of ensemble - plain over cases with a percentile bootstrap interval, paired over cases.

    plain, ensemble: float [C] per-case scores (or 0/1 solved) of the same cases in the same order.
    Each of `n` resamples draws C case indices with replacement (numpy default_rng(seed), so the
    interval is deterministic for a seed) and takes the mean difference; low/high are its
    (1 - level) / 2 and (1 + level) / 2 quantiles (linear interpolation).
    """
    a, b = np.asarray(plain, np.float64), np.asarray(ensemble, np.float64)
    if a.shape != b.shape or a.ndim != 1 or a.size == 0:
        raise ValueError(f"expected two non-empty [C] arrays of one shape, got {a.shape} and {b.shape}")
    if n < 1 or not 0.0 < level < 1.0:
        raise ValueError(f"need n >= 1 and 0 < level < 1, got n={n}, level={level}")
    diff = b - a
    idx = np.random.default_rng(seed).integers(0, diff.size, size=(n, diff.size))
    means = diff[idx].mean(1)
    low, high = np.quantile(means, [(1.0 - level) / 2.0, (1.0 + level) / 2.0])
    return Gain(float(diff.mean()), float(low), float(high), int(diff.size))


THRESHOLDS = (0.1, 0.25, 0.4, 0.5, 0.6, 0.75)


def trajectory_measures(
    x0_steps, case, scores, success: float = 0.5, thresholds=THRESHOLDS, frame: int = -1
) -> dict:
    """Everything above for one case's sampling trajectory, JSON-able (what an experiment records).

    x0_steps: [S, F, H, W, 3] x0-hat videos per step (or [S, H, W, 3] frames), uint8 or float 0..255;
    scores: float [S], the family scorer's score of each step's x0-hat (the caller scores, so this
    module stays free of family dispatch). Returns "candidates" int [S] at THRESHOLD, "sweep"
    {threshold: int [S]}, "answer" int [S] (`shown_answer` at 0.5), "solved" bool [S] (score >=
    success with the final answer), and "commit_step" (`commit_step` of "solved"; S = never).
    """
    scores = np.asarray(scores, np.float64)
    strength = answer_strength_steps(x0_steps, case, frame)  # [S, A]
    if scores.shape != (strength.shape[0],):
        raise ValueError(f"expected {strength.shape[0]} scores, got shape {scores.shape}")
    present = strength >= 0.5
    answer = np.where(present.sum(1) == 1, present.argmax(1), -1)
    solved = with_final_answer(scores >= success, answer)
    return {
        "candidates": (strength >= THRESHOLD).sum(1).tolist(),
        "sweep": {float(t): (strength >= t).sum(1).tolist() for t in thresholds},
        "answer": answer.tolist(),
        "solved": solved.tolist(),
        "commit_step": commit_step(solved),
    }
