"""Pattern: continue four periodic rows of coloured blocks into the grey cells at their right end.

Four rows of 8 blocks (3x6 pixels on a 4x8 lattice) on black. Each row repeats a unit of `period`
colours; the last `missing` blocks of every row are grey. The visible prefix always pins the period
(its shortest period is the true one), so the answer is unique. The video fills the grey blocks
column by column. In-domain periods are 2 or 3 with 2-3 blocks missing; held-out rows all have
period 4 (3 missing), a period never seen in training.
"""

from __future__ import annotations

import numpy as np

from cosjax.data.case import FRAMES, Case, progress, rng_for
from cosjax.data.prompts import PATTERN, prompt_id
from cosjax.data.render import BLACK, COLOURS, GREY, Grid, blank, classify, last_frame

NAME = "pattern"
ROWS, COLS = 4, 8
GRID = Grid(rows=ROWS, cols=COLS, pitch=(8, 4), fill=(1, 0, 6, 3), core=(2, 1, 4, 1))
PALETTE = (BLACK, GREY, *COLOURS)
IN_DOMAIN = {"periods": (2, 3), "missing": (2, 3)}
HELD_OUT = {"periods": (4,), "missing": (3,)}


def shortest_period(seq) -> int:
    """The smallest p with seq[i] == seq[i + p] for every valid i."""
    return next(p for p in range(1, len(seq) + 1) if all(seq[i] == seq[i + p] for i in range(len(seq) - p)))


def _row(rng: np.random.Generator, period: int, visible: int) -> list[int]:
    """Colour ids [COLS] repeating a unit of `period` whose visible prefix has that shortest period."""
    while True:
        unit = rng.integers(len(COLOURS), size=period)
        row = [int(unit[i % period]) for i in range(COLS)]
        if shortest_period(row[:visible]) == period:
            return row


def render(rows, missing: int, filled: int) -> np.ndarray:
    """uint8 [32, 32, 3]: rows [ROWS][COLS] of colour ids, the first `filled` grey blocks coloured.

    Grey blocks are filled column by column, top to bottom within a column.
    """
    frame = blank(BLACK)
    visible = COLS - missing
    for r, row in enumerate(rows):
        for c, colour in enumerate(row):
            done = c < visible or (c - visible) * ROWS + r < filled
            GRID.paint(frame, r, c, COLOURS[colour] if done else GREY)
    return frame


def generate(seed: int, held_out: bool = False) -> Case:
    """A pattern case; solution holds the full rows (colour ids), their periods and the missing count."""
    rng = rng_for(NAME, seed, held_out)
    spec = HELD_OUT if held_out else IN_DOMAIN
    missing = int(rng.choice(spec["missing"]))
    periods = [int(rng.choice(spec["periods"])) for _ in range(ROWS)]
    rows = [_row(rng, p, COLS - missing) for p in periods]
    video = np.stack([render(rows, missing, n) for n in progress(ROWS * missing, FRAMES)])
    solution = {"rows": rows, "periods": periods, "missing": missing}
    return Case(NAME, seed, held_out, PATTERN, prompt_id(PATTERN), video, solution)


def read_blocks(video) -> np.ndarray:
    """int [ROWS, COLS]: palette index of each block in the last frame (0 black, 1 grey, 2+ colour id)."""
    return classify(GRID.read(last_frame(video)), PALETTE)


def score(case: Case, video) -> float:
    """Fraction of grey blocks now in the right colour, times the fraction of visible blocks kept."""
    truth = np.asarray(case.solution["rows"]) + 2
    hidden = np.arange(COLS) >= COLS - case.solution["missing"]
    right = read_blocks(video) == truth
    return float(right[:, hidden].mean() * right[:, ~hidden].mean())
