"""Maze: draw the shortest path from the green start cell to the red goal cell.

A perfect 4x4 maze (recursive backtracker, so the shortest path is the only path) on an 8-pixel
lattice: 1-pixel black walls (the outer right and bottom walls on the frame's last row and column),
4x4-pixel markers in the middle of each cell. The video extends the blue path one move at a time
(frame k shows the first round(k * moves / 8) moves); the last frame shows the whole path.
In-domain paths take 3..6 moves; held-out paths take 8 or more, a length never seen in training.
One cell is one 8x8-pixel token of the embedded model (pool 2, (1, 4, 4) patches).
"""

from __future__ import annotations

from collections import deque

import numpy as np

from cosjax.data.case import FRAMES, Case, progress, rng_for
from cosjax.data.prompts import MAZE, prompt_id
from cosjax.data.render import BLACK, BLUE, GREEN, RED, WHITE, Grid, blank, classify, last_frame

NAME = "maze"
N = 4  # cells per side
PITCH = 8
GRID = Grid(rows=N, cols=N, pitch=(PITCH, PITCH), fill=(2, 2, 4, 4), core=(3, 3, 2, 2))
PATH = BLUE
PALETTE = (WHITE, BLACK, PATH, GREEN, RED)
IN_DOMAIN_MOVES = (3, 6)
HELD_OUT_MOVES = (8, N * N)
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
    """uint8 [32, 32, 3]: the maze with start/goal and the first `moves` moves of `path` drawn.

    A move paints a 4-pixel-wide band between the two cells' markers (through the open wall).
    """
    frame = blank(WHITE)
    last = N * PITCH - 1  # the outer right / bottom wall
    for i in range(N):
        frame[i * PITCH, :] = BLACK
        frame[:, i * PITCH] = BLACK
    frame[last, :] = BLACK
    frame[:, last] = BLACK
    for r, c in zip(*np.nonzero(right), strict=True):
        frame[r * PITCH + 1 : (r + 1) * PITCH, (c + 1) * PITCH] = WHITE
    for r, c in zip(*np.nonzero(down), strict=True):
        frame[(r + 1) * PITCH, c * PITCH + 1 : (c + 1) * PITCH] = WHITE
    for (r0, c0), (r1, c1) in zip(path[:moves], path[1 : moves + 1], strict=True):
        top, left = min(r0, r1) * PITCH + 2, min(c0, c1) * PITCH + 2
        bottom, right_edge = max(r0, r1) * PITCH + 6, max(c0, c1) * PITCH + 6
        frame[top:bottom, left:right_edge] = PATH
    GRID.paint(frame, *path[0], GREEN)
    GRID.paint(frame, *path[-1], RED)
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


def link_box(a: tuple[int, int], b: tuple[int, int]) -> tuple[slice, slice]:
    """The pixels where the path band between adjacent cells a and b crosses their shared wall."""
    (r0, c0), (r1, c1) = sorted([a, b])
    if r0 == r1:  # horizontal neighbours: the wall column between them, the band's middle rows
        x = c1 * PITCH
        return slice(r0 * PITCH + 3, r0 * PITCH + 5), slice(x - 1, x + 2)
    y = r1 * PITCH
    return slice(y - 1, y + 2), slice(c0 * PITCH + 3, c0 * PITCH + 5)


LINKS = [((r, c), (r, c + 1)) for r in range(N) for c in range(N - 1)] + [
    ((r, c), (r + 1, c)) for r in range(N - 1) for c in range(N)
]


def painted_links(video) -> set[tuple[tuple[int, int], tuple[int, int]]]:
    """The pairs of adjacent cells (sorted) whose shared wall reads as crossed by the path colour."""
    frame = last_frame(video)
    means = np.stack([frame[link_box(a, b)].reshape(-1, 3).mean(0) for a, b in LINKS])
    painted = classify(means, PALETTE) == PALETTE.index(PATH)
    return {link for link, p in zip(LINKS, painted, strict=True) if p}


def score(case: Case, video) -> float:
    """IoU of what is painted with the true path: its inner cells (start and goal not counted) and
    the wall crossings between consecutive cells (into start and goal included).

    1.0 only when exactly the path is drawn: since the maze is perfect, any wall crossing or detour
    paints cells or crossings off the path, and any gap (the last step into the goal included)
    leaves part of the path unpainted.
    """
    path = [tuple(cell) for cell in case.solution["path"]]
    truth_cells = set(path[1:-1])
    truth_links = {tuple(sorted(pair)) for pair in zip(path, path[1:], strict=False)}
    cells = painted_cells(video)
    cells[path[0]] = cells[path[-1]] = False
    painted = {tuple(int(i) for i in rc) for rc in zip(*np.nonzero(cells), strict=True)}
    links = painted_links(video)
    hit = len(painted & truth_cells) + len(links & truth_links)
    union = len(painted | truth_cells) + len(links | truth_links)
    return hit / union if union else 1.0
