"""Long maze (hard): draw the only path through an 8 x 8 maze, 12-24 moves long, growing frame by frame.

Sizes: 32 x 32 RGB, 9 frames (4k + 1), `lattice.LATTICE_8`: 4-pixel cells (2 x 2 cells per toy
token), 1-pixel walls on the top/left lattice lines (the frame edge closes the right and bottom),
2 x 2-pixel markers and a 2-pixel path band, all on the even 2 x 2 blocks the toy pools into.
The maze is perfect (recursive backtracker), so the path is unique and the task is a multi-step
rule: the route through 12-24 cells has to be traced, which a single forward pass of a small
model cannot do from the first frame alone (the shipped maze needs 3-6 moves on 4 x 4).
The video extends the path one move at a time: frame k shows the first round(k * moves / 8) moves,
so the toy's keyframes 0, 4, 8 hold none, half and all of it.

The move count is drawn uniformly from the range, then a goal at exactly that distance.
In-domain paths take 12-24 moves; held-out paths take 28-40, lengths never seen in training.
The range was 8-20 first (a 10000-step probe of the 4-layer toy solved 8 of 24 of those), then
6-16, on which the model trained by the same recipe decided the path in one pass (step-0 x0-hat
solved 0.677 vs final 0.650, 300 cases): the steps had nothing to add below about 14 moves.

Measured on the shipped model (its preset; 300 cases per split, seeds 100000+; `cosjax run
trajectory` "by_length"): in-domain the final video solves 0.387 and the step-0 x0-hat 0.220, and
the median solved case commits at step 1; the gap grows with the length: 12-14 moves 0.40 at step
0 vs 0.42 final (72 cases), 15-20 moves 0.23 vs 0.41 (135), 21-24 moves 0.065 vs 0.33 (93).
Held-out (28-40 moves): 0.003 at step 0 vs 0.123 final, median commit at step 2.

solution: "path", "routes" (just [path]), "moves", "right"/"down", "answer_boxes" and "ink", the
same fields as `maze_routes` so the phenomena measures treat both alike.
"""

from __future__ import annotations

import numpy as np

from cosjax.data.case import FRAMES, Case, progress, rng_for
from cosjax.data.lattice import LATTICE_8, PATH, answer_boxes
from cosjax.data.prompts import MAZE, prompt_id
from cosjax.data.render import last_frame

NAME = "maze_long"
LATTICE = LATTICE_8
N = LATTICE.n
IN_DOMAIN_MOVES = (12, 24)
HELD_OUT_MOVES = (28, 40)


def generate(seed: int, held_out: bool = False) -> Case:
    """A long-maze case (see the module docstring)."""
    rng = rng_for(NAME, seed, held_out)
    lo, hi = HELD_OUT_MOVES if held_out else IN_DOMAIN_MOVES
    moves = int(rng.integers(lo, hi + 1))
    while True:
        right, down = LATTICE.carve(rng)
        start = (int(rng.integers(N)), int(rng.integers(N)))
        dist = LATTICE.distances(right, down, start)
        goals = sorted(cell for cell, d in dist.items() if d == moves)
        if goals:
            break
    goal = goals[int(rng.integers(len(goals)))]
    (path,) = LATTICE.shortest_paths(right, down, start, goal, cap=2)
    video = np.stack([LATTICE.render(right, down, path, m) for m in progress(moves, FRAMES)])
    solution = {
        "path": [list(cell) for cell in path],
        "routes": [[list(cell) for cell in path]],
        "moves": moves,
        "right": right.tolist(),
        "down": down.tolist(),
        "answer_boxes": [answer_boxes(LATTICE, path)],
        "ink": list(PATH),
    }
    return Case(NAME, seed, held_out, MAZE, prompt_id(MAZE), video, solution)


def score(case: Case, video) -> float:
    """IoU of the painted inner cells and wall crossings (last frame) with the path's, as `maze.score`.

    1.0 only when exactly the path is drawn: the maze is perfect, so any detour or wall crossing
    paints cells or crossings off the path, and any gap leaves part of the path unpainted.
    """
    path = [tuple(cell) for cell in case.solution["path"]]
    return float(LATTICE.iou(LATTICE.drawn(last_frame(video), path), path))
