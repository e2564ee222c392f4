"""Follow the arrows (a chain of hops): from the green cell, go where each cell points, to the red cell.

Sizes: 32 x 32 RGB, 9 frames (4k + 1), `lattice.LATTICE_4` geometry without walls (8-pixel cells,
one cell per toy token). Every cell but the red stop cell holds a pointer: the grey half of its
4 x 4 centre square on the side of the neighbour it points to (the right half points right, the
lower half down, ...). The path from the green start follows the pointers; the distractor cells off
the path point at random in-board neighbours (some into the path), so which cells lie on the path
is only known by walking it from the start, one hop after another. The family was built as a
candidate for issue 14's hard family (a few layers follow a few hops per pass, so the sampler would
have to extend what earlier steps drew), and measured to be the opposite, a control: the toy DiT
(4 layers, dim 128, one token per cell) trained on arrows alone for 4000 steps (10000 cases, change
weight 10 then 1 for the last 1000) draws the chain in one pass. Its step-0 x0-hat solved 96 of 96
in-domain cases (seeds 70000+; the final video 96) and 64 of 64 held-out chains of 11-15 hops
(final 63). Attention follows pointers in parallel, so a long chain alone does not make the steps
matter.

The path is a self-avoiding walk of a drawn length (uniform over the range) from a random start;
the video paints it one move at a time like the mazes (frame k shows the first
round(k * moves / 8) moves, covering the pointers it passes). In-domain paths take 6-10 moves,
held-out 11-15 (lengths never seen in training; 15 visits all 16 cells).

solution: "path", "routes" (just [path]), "moves", "pointers" ({"r,c": [dr, dc]} of every pointing
cell), "answer_boxes" and "ink": the fields the phenomena measures read, as in `maze_long`.
"""

from __future__ import annotations

import numpy as np

from cosjax.data.case import FRAMES, Case, progress, rng_for
from cosjax.data.lattice import LATTICE_4, PATH, STEPS, answer_boxes
from cosjax.data.prompts import ARROWS, prompt_id
from cosjax.data.render import GREY, last_frame

NAME = "arrows"
LATTICE = LATTICE_4
N = LATTICE.n
IN_DOMAIN_MOVES = (6, 10)
HELD_OUT_MOVES = (11, 15)
POINTER = GREY
OPEN_RIGHT = np.ones((N, N - 1), bool)  # no walls: every move is allowed
OPEN_DOWN = np.ones((N - 1, N), bool)

Cell = tuple[int, int]


def walk(rng: np.random.Generator, start: Cell, moves: int) -> list[Cell] | None:
    """A random self-avoiding walk of exactly `moves` moves from `start` (depth first with random
    neighbour order, so one exists whenever any does), or None."""

    def extend(path: list[Cell], seen: set[Cell]) -> list[Cell] | None:
        if len(path) == moves + 1:
            return path
        options = [nb for nb in LATTICE.neighbours(path[-1]) if nb not in seen]
        for i in rng.permutation(len(options)):
            nb = options[int(i)]
            found = extend([*path, nb], seen | {nb})
            if found:
                return found
        return None

    return extend([start], {start})


def pointer_box(cell: Cell, step: tuple[int, int]) -> tuple[int, int, int, int]:
    """(y0, y1, x0, x1): the half of the cell's centre square on the side `step` (dr, dc) points to."""
    y0, y1, x0, x1 = LATTICE.cell_box(cell, *LATTICE.band)
    half = LATTICE.band[1] // 2
    dr, dc = step
    if dr:
        return (y1 - half, y1, x0, x1) if dr > 0 else (y0, y0 + half, x0, x1)
    return (y0, y1, x1 - half, x1) if dc > 0 else (y0, y1, x0, x0 + half)


def render(path: list[Cell], pointers: dict[Cell, tuple[int, int]], moves: int) -> np.ndarray:
    """uint8 [SIZE, SIZE, 3]: the board with the first `moves` moves of `path` painted."""
    frame = LATTICE.render(OPEN_RIGHT, OPEN_DOWN, path, moves)
    covered = set(path[1 : moves + 1])  # painted squares hide their pointers
    for cell, step in pointers.items():
        if cell not in covered:
            y0, y1, x0, x1 = pointer_box(cell, step)
            frame[y0:y1, x0:x1] = POINTER
    return frame


def generate(seed: int, held_out: bool = False) -> Case:
    """An arrows case (see the module docstring)."""
    rng = rng_for(NAME, seed, held_out)
    lo, hi = HELD_OUT_MOVES if held_out else IN_DOMAIN_MOVES
    moves = int(rng.integers(lo, hi + 1))
    path = None
    while path is None:
        path = walk(rng, (int(rng.integers(N)), int(rng.integers(N))), moves)
    pointers: dict[Cell, tuple[int, int]] = {
        a: (b[0] - a[0], b[1] - a[1]) for a, b in zip(path, path[1:], strict=False)
    }
    for cell in sorted({(r, c) for r in range(N) for c in range(N)} - set(path)):
        inside = LATTICE.neighbours(cell)
        options = [step for step in STEPS if (cell[0] + step[0], cell[1] + step[1]) in inside]
        pointers[cell] = options[int(rng.integers(len(options)))]
    video = np.stack([render(path, pointers, m) for m in progress(moves, FRAMES)])
    solution = {
        "path": [list(cell) for cell in path],
        "routes": [[list(cell) for cell in path]],
        "moves": moves,
        "pointers": {f"{r},{c}": list(step) for (r, c), step in sorted(pointers.items())},
        "answer_boxes": [answer_boxes(LATTICE, path)],
        "ink": list(PATH),
    }
    return Case(NAME, seed, held_out, ARROWS, prompt_id(ARROWS), video, solution)


def follow(pointers: dict[str, list[int]], start: Cell, limit: int = N * N) -> list[Cell]:
    """The cells reached from `start` by following `pointers` (solution format) until a cell
    without one (the stop cell), at most `limit` moves: the path a correct video draws."""
    path = [tuple(start)]
    while len(path) <= limit and f"{path[-1][0]},{path[-1][1]}" in pointers:
        dr, dc = pointers[f"{path[-1][0]},{path[-1][1]}"]
        path.append((path[-1][0] + dr, path[-1][1] + dc))
    return path


def score(case: Case, video) -> float:
    """(painted path elements - painted elements off the path) / path elements, at least 0, read from
    the last frame; the elements are the inner cells and crossings (`Lattice.path_elements`).

    1.0 only when exactly the path is drawn; the first k of m moves score 2k / (2m - 1); a hop off the
    chain costs as much as a missing one, so painting every cell (which holds any chain) scores 0.
    (IoU, the mazes' score, rates that flood 0.5 on a 10-move chain of this 16-cell board.)
    """
    path = [tuple(cell) for cell in case.solution["path"]]
    cells, links = LATTICE.drawn(last_frame(video), path)
    true_cells, true_links = LATTICE.path_elements(path)
    hit = len(cells & true_cells) + len(links & true_links)
    extra = len(cells - true_cells) + len(links - true_links)
    return max(0.0, (hit - extra) / (len(true_cells) + len(true_links)))
