"""The `Case` record every task family returns, the frame geometry, and per-case random streams."""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

import numpy as np

SIZE = 32  # frames are SIZE x SIZE RGB
FRAMES = 9  # frames per video (4k + 1, as the Wan VAE needs)


@dataclass(frozen=True, eq=False)
class Case:
    """One puzzle in the VBVR format: the first frame poses it, the video solves it.

    video: uint8 [FRAMES, SIZE, SIZE, 3]; frame 0 is the puzzle, the last frame the solution.
    solution: JSON-able ground truth the family's scorer reads (cells, colours, rule).
    prompt_id: index into `cosjax.data.prompts.PROMPTS` (one vocabulary shared by all families).
    """

    family: str
    seed: int
    held_out: bool
    prompt: str
    prompt_id: int
    video: np.ndarray
    solution: dict = field(default_factory=dict)

    @property
    def first_frame(self) -> np.ndarray:
        """uint8 [SIZE, SIZE, 3]: the puzzle (== video[0])."""
        return self.video[0]

    @property
    def final_frame(self) -> np.ndarray:
        """uint8 [SIZE, SIZE, 3]: the solved state (== video[-1])."""
        return self.video[-1]


def rng_for(family: str, seed: int, held_out: bool) -> np.random.Generator:
    """A random stream fixed by (family, seed, held_out): the same triple always gives the same case."""
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    entropy = [zlib.crc32(family.encode()), int(seed), int(held_out)]
    return np.random.default_rng(np.random.SeedSequence(entropy))


def progress(total: int, frames: int = FRAMES) -> list[int]:
    """How many of `total` solution units are drawn in each frame: 0 in frame 0, `total` in the last."""
    return [int(np.floor(k * total / (frames - 1) + 0.5)) for k in range(frames)]
