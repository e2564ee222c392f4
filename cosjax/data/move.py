"""Move: slide the square to the cell a rule selects (the prompt names the rule).

A 4x4 grid of 8-pixel cells on black. The solid 4x4 square starts in one cell; three hollow rings
of different colours sit in other cells, one ring in the square's colour. Rule "colour": the target
is the ring of the square's colour. Rule "mirror": the target is the cell mirrored across the
vertical centre line. The two rules never agree, so the prompt decides. The video slides the square
in a straight line to the target (frame k is k/8 of the way).
Held-out: each colour has one grid quadrant (HELD_QUADRANT) it is never moved to in training; held-out
cases are exactly those (colour, target quadrant) pairs.
"""

from __future__ import annotations

import numpy as np

from cosjax.data.case import FRAMES, Case, rng_for
from cosjax.data.prompts import MOVE_COLOUR, MOVE_MIRROR, prompt_id
from cosjax.data.render import BLACK, COLOURS, Grid, blank, classify, last_frame

NAME = "move"
N = 4
CELL = 8
GRID = Grid(rows=N, cols=N, pitch=(CELL, CELL), fill=(2, 2, 4, 4), core=(3, 3, 2, 2))
PALETTE = (BLACK, *COLOURS)
RULES = ("colour", "mirror")
RULE_PROMPTS = {"colour": MOVE_COLOUR, "mirror": MOVE_MIRROR}
RINGS = 3
HELD_QUADRANT = tuple(i % 4 for i in range(len(COLOURS)))  # colour id -> its held-out quadrant


def quadrant(cell) -> int:
    """0 top-left, 1 top-right, 2 bottom-left, 3 bottom-right."""
    return 2 * (cell[0] // (N // 2)) + cell[1] // (N // 2)


def render(rings, colour: int, pos: tuple[int, int]) -> np.ndarray:
    """uint8 [32, 32, 3]: rings [(cell, colour id)] and the square with its top-left pixel at pos."""
    frame = blank(BLACK)
    for (r, c), ring in rings:
        y, x = r * CELL + 1, c * CELL + 1
        frame[y : y + 6, x : x + 6] = COLOURS[ring]
        frame[y + 1 : y + 5, x + 1 : x + 5] = BLACK
    frame[pos[0] : pos[0] + 4, pos[1] : pos[1] + 4] = COLOURS[colour]
    return frame


def generate(seed: int, held_out: bool = False) -> Case:
    """A move case; solution holds rule, colour id, start/target cells and the rings."""
    rng = rng_for(NAME, seed, held_out)
    while True:
        rule = RULES[int(rng.integers(len(RULES)))]
        colour = int(rng.integers(len(COLOURS)))
        rest = [i for i in range(len(COLOURS)) if i != colour]
        others = [int(i) for i in rng.permutation(rest)[: RINGS - 1]]
        start = divmod(int(rng.integers(N * N)), N)
        mirror = (start[0], N - 1 - start[1])
        cells = (divmod(int(i), N) for i in rng.permutation(N * N))
        free = [cell for cell in cells if cell not in (start, mirror)]
        rings = list(zip(free[:RINGS], [colour, *others], strict=True))
        target = rings[0][0] if rule == "colour" else mirror
        if (quadrant(target) == HELD_QUADRANT[colour]) == held_out:
            break
    frames = []
    for k in range(FRAMES):
        t = k / (FRAMES - 1)
        pos = [round(CELL * (a + (b - a) * t)) + 2 for a, b in zip(start, target, strict=True)]
        frames.append(render(rings, colour, tuple(pos)))
    solution = {
        "rule": rule,
        "colour": colour,
        "start": list(start),
        "target": list(target),
        "rings": [[list(cell), ring] for cell, ring in rings],
    }
    prompt = RULE_PROMPTS[rule]
    return Case(NAME, seed, held_out, prompt, prompt_id(prompt), np.stack(frames), solution)


def occupied(video, colour: int) -> np.ndarray:
    """bool [N, N]: cells whose core reads as the square's colour in the last frame."""
    return classify(GRID.read(last_frame(video)), PALETTE) == colour + 1


def score(case: Case, video) -> float:
    """1 / (1 + squares elsewhere) if the square sits at the target, else 0."""
    here = occupied(video, case.solution["colour"])
    target = tuple(case.solution["target"])
    at_target = bool(here[target])
    return float(at_target) / (1 + int(here.sum()) - int(at_target))
