"""The fixed prompt vocabulary: one global list, so a prompt id is unique across families."""

from __future__ import annotations

MAZE = "Draw the shortest path from the green cell to the red cell without crossing a wall."
MOVE_COLOUR = "Move the square into the ring of the same colour."
MOVE_MIRROR = "Move the square to the mirror cell on the other side of the vertical centre line."
ARROWS = (
    "Follow the pointers from the green cell (the grey half of each cell points to the next one) "
    "and draw the path to the red cell."
)
PATTERN = "Each row repeats a colour pattern. Fill the grey cells so that every row continues it."

# New prompts go at the end: a toy model's prompt table is indexed by these ids.
PROMPTS: tuple[str, ...] = (MAZE, MOVE_COLOUR, MOVE_MIRROR, PATTERN, ARROWS)
FAMILY_PROMPTS: dict[str, tuple[int, ...]] = {"maze": (0,), "move": (1, 2), "pattern": (3,), "arrows": (4,)}


def prompt_id(prompt: str) -> int:
    """The id of a prompt in `PROMPTS` (ValueError if it is not in the vocabulary)."""
    return PROMPTS.index(prompt)
