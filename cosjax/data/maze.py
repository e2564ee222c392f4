"""Maze: draw the shortest path from the green start cell to the red goal cell.

A perfect 6x6 maze (recursive backtracker, so the shortest path is the only path) on a 5-pixel
lattice: 1-pixel black walls, 4x4-pixel white cells. The video extends the blue path one move at a
time (frame k shows the first round(k * moves / 8) moves); the last frame shows the whole path.
In-domain paths take 4..10 moves; held-out paths take 12 or more, a length never seen in training.
"""

from __future__ import annotations

from collections import deque

import numpy as np

from cosjax.data.case import FRAMES, Case, progress, rng_for
from cosjax.data.prompts import MAZE, prompt_id
from cosjax.data.render import BLACK, BLUE, GREEN, RED, WHITE, Grid, blank, classify, last_frame

NAME = "maze"
N = 6  # cells per side
PITCH = 5
GRID = Grid(rows=N, cols=N, pitch=(PITCH, PITCH), fill=(1, 1, 4, 4), core=(2, 2, 2, 2))
PATH = BLUE
PALETTE = (WHITE, BLACK, PATH, GREEN, RED)
IN_DOMAIN_MOVES = (4, 10)
HELD_OUT_MOVES = (12, N * N)
STEPS = ((0, 1), (1, 0), (0, -1), (-1, 0))


def carve(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A perfect maze: right bool [N, N-1] (open to the right of (r, c)), down bool [N-1, N]."""
    right = np.zeros((N, N - 1), bool)
    down = np.zeros((N - 1, N), bool)
    seen = np.zeros((N, N), bool)
    stack = [(int(rng.integers(N)), int(rng.integers(N)))]
    seen[stack[0]] = True
    while stack:
        r, c = stack[-1]
        options = [
            (r + dr, c + dc)
            for dr, dc in STEPS
            if 0 <= r + dr < N and 0 <= c + dc < N and not seen[r + dr, c + dc]
        ]
        if not options:
            stack.pop()
            continue
        nr, nc = options[int(rng.integers(len(options)))]
        if nr == r:
            right[r, min(c, nc)] = True
        else:
            down[min(r, nr), c] = True
        seen[nr, nc] = True
        stack.append((nr, nc))
    return right, down


def _open(right: np.ndarray, down: np.ndarray, a: tuple[int, int], b: tuple[int, int]) -> bool:
    if a[0] == b[0]:
        return bool(right[a[0], min(a[1], b[1])])
    return bool(down[min(a[0], b[0]), a[1]])


def _bfs(right: np.ndarray, down: np.ndarray, start: tuple[int, int]) -> dict:
    """{cell: previous cell} over every cell reachable from start (start maps to None)."""
    parent = {start: None}
    queue = deque([start])
    while queue:
        r, c = queue.popleft()
        for dr, dc in STEPS:
            nb = (r + dr, c + dc)
            if 0 <= nb[0] < N and 0 <= nb[1] < N and nb not in parent and _open(right, down, (r, c), nb):
                parent[nb] = (r, c)
                queue.append(nb)
    return parent


def _path(parent: dict, goal: tuple[int, int]) -> list[tuple[int, int]]:
    path = [goal]
    while parent[path[-1]] is not None:
        path.append(parent[path[-1]])
    return path[::-1]


def render(right, down, path, moves: int) -> np.ndarray:
    """uint8 [32, 32, 3]: the maze with start/goal and the first `moves` moves of `path` drawn."""
    frame = blank(WHITE)
    edge = N * PITCH + 1
    for i in range(N + 1):
        frame[i * PITCH, :edge] = BLACK
        frame[:edge, i * PITCH] = BLACK
    for r, c in zip(*np.nonzero(right), strict=True):
        frame[r * PITCH + 1 : r * PITCH + PITCH, (c + 1) * PITCH] = WHITE
    for r, c in zip(*np.nonzero(down), strict=True):
        frame[(r + 1) * PITCH, c * PITCH + 1 : c * PITCH + PITCH] = WHITE
    GRID.paint(frame, *path[0], GREEN)
    GRID.paint(frame, *path[-1], RED)
    for (r0, c0), (r1, c1) in zip(path[:moves], path[1 : moves + 1], strict=True):
        if r0 == r1:
            frame[r0 * PITCH + 1 : r0 * PITCH + PITCH, max(c0, c1) * PITCH] = PATH
        else:
            frame[max(r0, r1) * PITCH, c0 * PITCH + 1 : c0 * PITCH + PITCH] = PATH
        if (r1, c1) != path[-1]:
            GRID.paint(frame, r1, c1, PATH)
    return frame


def generate(seed: int, held_out: bool = False) -> Case:
    """A maze case; solution holds the path (start..goal cells), the walls and the move count."""
    rng = rng_for(NAME, seed, held_out)
    lo, hi = HELD_OUT_MOVES if held_out else IN_DOMAIN_MOVES
    while True:
        right, down = carve(rng)
        start = (int(rng.integers(N)), int(rng.integers(N)))
        parent = _bfs(right, down, start)
        lengths = {cell: len(_path(parent, cell)) - 1 for cell in parent}
        goals = sorted(cell for cell, n in lengths.items() if lo <= n <= hi)
        if goals:
            break
    path = _path(parent, goals[int(rng.integers(len(goals)))])
    moves = len(path) - 1
    video = np.stack([render(right, down, path, m) for m in progress(moves, FRAMES)])
    solution = {
        "path": [list(cell) for cell in path],
        "moves": moves,
        "right": right.tolist(),
        "down": down.tolist(),
    }
    return Case(NAME, seed, held_out, MAZE, prompt_id(MAZE), video, solution)


def painted_cells(video) -> np.ndarray:
    """bool [N, N]: cells whose core reads as the path colour in the last frame."""
    return classify(GRID.read(last_frame(video)), PALETTE) == PALETTE.index(PATH)


def score(case: Case, video) -> float:
    """IoU of the painted cells with the true path's inner cells (start and goal not counted).

    1.0 only when exactly the path is painted; since the maze is perfect, any wall crossing or
    detour paints cells off the path and any gap leaves path cells unpainted.
    """
    path = [tuple(cell) for cell in case.solution["path"]]
    truth = np.zeros((N, N), bool)
    for cell in path[1:-1]:
        truth[cell] = True
    painted = painted_cells(video)
    painted[path[0]] = painted[path[-1]] = False
    union = (painted | truth).sum()
    return float((painted & truth).sum() / union) if union else 1.0
