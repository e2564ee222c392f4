"""The task-family registry, dispatching generate/score, and stacked datasets for training.

case = generate("maze", seed=3)                 # Case: first_frame, video, prompt, solution
score(case, generated_video)                    # float in [0, 1], read from the last frame
data = make_dataset("move", n=512, seed0=0)     # Dataset of stacked uint8 arrays + prompt ids
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from cosjax.data import arrows, maze, maze_long, maze_routes, move, pattern
from cosjax.data.case import Case
from cosjax.data.prompts import FAMILY_PROMPTS, MAZE, PROMPTS, prompt_id


@dataclass(frozen=True)
class Family:
    """A task family: `generate(seed, held_out)` -> Case, `score(case, video)` -> float in [0, 1]."""

    name: str
    generate: Callable[..., Case]
    score: Callable[[Case, np.ndarray], float]
    prompt_ids: tuple[int, ...]


def _family(module, prompt_ids: tuple[int, ...]) -> Family:
    return Family(module.NAME, module.generate, module.score, prompt_ids)


# Issue 14's families: several valid answers (maze_routes), answers that take many steps (maze_long);
# they reuse the maze prompt.
REASONING_FAMILIES: dict[str, Family] = {
    m.NAME: _family(m, (prompt_id(MAZE),)) for m in (maze_routes, maze_long)
}
# The shipped model's families: the default of `toy` data ("toy" = all of these) and of the demo.
FAMILIES: dict[str, Family] = {
    **REASONING_FAMILIES,
    **{m.NAME: _family(m, FAMILY_PROMPTS[m.NAME]) for m in (move, pattern)},
}
# Opt-in by name ("toy:maze"): the 4 x 4 unique-path maze the earlier embedded model was trained on
# (one pass solves it; maze_routes is the same board with loops), and `arrows` (a chain of 6-10
# pointer hops: deep, yet one pass of the toy DiT draws it, see its docstring).
OTHER_FAMILIES: dict[str, Family] = {m.NAME: _family(m, FAMILY_PROMPTS[m.NAME]) for m in (maze, arrows)}
ALL_FAMILIES: dict[str, Family] = {**FAMILIES, **OTHER_FAMILIES}


class Dataset(NamedTuple):
    """Stacked cases of one family, seeds seed0 .. seed0 + N - 1.

    first_frames uint8 [N, 32, 32, 3]; videos uint8 [N, 9, 32, 32, 3] (videos[:, 0] == first_frames);
    prompt_ids int32 [N] into `PROMPTS`; seeds int64 [N].
    """

    first_frames: np.ndarray
    videos: np.ndarray
    prompt_ids: np.ndarray
    seeds: np.ndarray


def family(name: str) -> Family:
    if name not in ALL_FAMILIES:
        raise KeyError(f"unknown task family {name!r}; known: {sorted(ALL_FAMILIES)}")
    return ALL_FAMILIES[name]


def generate(name: str, seed: int, held_out: bool = False) -> Case:
    """The case of family `name` fixed by (seed, held_out)."""
    return family(name).generate(seed, held_out)


def score(case: Case, video) -> float:
    """Scores a video (uint8 or 0..255 float, [F, 32, 32, 3] or one frame) against the case's solution."""
    return family(case.family).score(case, video)


def make_dataset(name: str, n: int, seed0: int = 0, held_out: bool = False) -> Dataset:
    """`n` cases of family `name` with seeds seed0 .. seed0 + n - 1, stacked for training."""
    cases = [generate(name, seed0 + i, held_out) for i in range(n)]
    videos = np.stack([c.video for c in cases])
    return Dataset(
        first_frames=videos[:, 0].copy(),
        videos=videos,
        prompt_ids=np.asarray([c.prompt_id for c in cases], np.int32),
        seeds=np.arange(seed0, seed0 + n, dtype=np.int64),
    )


__all__ = [
    "ALL_FAMILIES",
    "FAMILIES",
    "OTHER_FAMILIES",
    "PROMPTS",
    "REASONING_FAMILIES",
    "Dataset",
    "Family",
    "family",
    "generate",
    "make_dataset",
    "score",
]
