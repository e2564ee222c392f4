"""Maze geometry on a square lattice of cells, for any cells-per-side that tiles the 32-pixel frame.

Shared by the issue-14 maze families (`maze_routes`, `maze_long`); `maze.py` keeps its own 4 x 4
code (the shipped model's family), which `LATTICE_4` reproduces pixel for pixel.

Walls are 1-pixel black lines on the lattice lines y, x = i * pitch (i < n), plus the far right and
bottom lines at SIZE - 1 when `far_wall` (with pitch 4 there is no room: the frame edge closes the
maze). Markers (start green, goal red) and the blue path band sit at offset `band[0]` in a cell,
`band[1]` pixels wide; a move paints the band from one cell's marker to the next one's through the
open wall. Readers average the `core` of each cell and the `link` pixels around each wall line.

Pixel boxes are chosen on the even 2 x 2 blocks the toy model pools its latents into
(`cosjax.toy.codec.encode_videos`, pool 2): each path element is whole pooled pixels, so a model that
works in the pooled space can draw it crisply.

Walls: right bool [n, n - 1] (open to the right of (r, c)), down bool [n - 1, n] (open below).
Cells are (row, col) tuples; a path is a list of cells, start first.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from cosjax.data.case import SIZE
from cosjax.data.render import BLACK, BLUE, GREEN, RED, WHITE, blank, classify

PATH = BLUE
PALETTE = (WHITE, BLACK, PATH, GREEN, RED)
STEPS = ((0, 1), (1, 0), (0, -1), (-1, 0))

Cell = tuple[int, int]
Box = tuple[int, int, int, int]  # y0, y1, x0, x1 (half-open)


@dataclass(frozen=True)
class Lattice:
    """n x n cells of `pitch` pixels (n * pitch == SIZE).

    band: (offset, width) of the markers and path band inside a cell, in pixels.
    core: (offset, size) of the square a reader averages inside a cell.
    link: (before, after) pixels around a wall line the crossing reader spans (across the band's
        middle `core` rows or columns).
    """

    n: int
    pitch: int
    band: tuple[int, int]
    core: tuple[int, int]
    link: tuple[int, int]
    far_wall: bool

    def __post_init__(self):
        if self.n * self.pitch != SIZE:
            raise ValueError(f"{self.n} cells of {self.pitch} pixels do not tile a {SIZE}-pixel frame")

    # --- graph -----------------------------------------------------------------------------------

    def carve(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """A perfect maze (recursive backtracker: exactly one path between any two cells)."""
        n = self.n
        right = np.zeros((n, n - 1), bool)
        down = np.zeros((n - 1, n), bool)
        seen = np.zeros((n, n), bool)
        stack = [(int(rng.integers(n)), int(rng.integers(n)))]
        seen[stack[0]] = True
        while stack:
            r, c = stack[-1]
            options = [nb for nb in self.neighbours((r, c)) if not seen[nb]]
            if not options:
                stack.pop()
                continue
            nb = options[int(rng.integers(len(options)))]
            self.set_open(right, down, (r, c), nb)
            seen[nb] = True
            stack.append(nb)
        return right, down

    def neighbours(self, cell: Cell) -> list[Cell]:
        """The in-grid 4-neighbours of a cell (walls ignored)."""
        r, c = cell
        return [(r + dr, c + dc) for dr, dc in STEPS if 0 <= r + dr < self.n and 0 <= c + dc < self.n]

    @staticmethod
    def is_open(right: np.ndarray, down: np.ndarray, a: Cell, b: Cell) -> bool:
        """Whether adjacent cells a and b are joined (no wall between them)."""
        if a[0] == b[0]:
            return bool(right[a[0], min(a[1], b[1])])
        return bool(down[min(a[0], b[0]), a[1]])

    @staticmethod
    def set_open(right: np.ndarray, down: np.ndarray, a: Cell, b: Cell) -> None:
        """Removes the wall between adjacent cells a and b (in place)."""
        if a[0] == b[0]:
            right[a[0], min(a[1], b[1])] = True
        else:
            down[min(a[0], b[0]), a[1]] = True

    def links(self) -> list[tuple[Cell, Cell]]:
        """Every pair of adjacent cells, sorted within the pair: right-neighbours first, then down."""
        n = self.n
        return [((r, c), (r, c + 1)) for r in range(n) for c in range(n - 1)] + [
            ((r, c), (r + 1, c)) for r in range(n - 1) for c in range(n)
        ]

    def closed_links(self, right: np.ndarray, down: np.ndarray) -> list[tuple[Cell, Cell]]:
        return [(a, b) for a, b in self.links() if not self.is_open(right, down, a, b)]

    def distances(self, right: np.ndarray, down: np.ndarray, start: Cell) -> dict[Cell, int]:
        """{cell: moves from start} over every cell reachable from start (breadth first)."""
        dist = {start: 0}
        queue = deque([start])
        while queue:
            cell = queue.popleft()
            for nb in self.neighbours(cell):
                if nb not in dist and self.is_open(right, down, cell, nb):
                    dist[nb] = dist[cell] + 1
                    queue.append(nb)
        return dist

    def shortest_paths(self, right, down, start: Cell, goal: Cell, cap: int) -> list[list[Cell]]:
        """Up to `cap` shortest paths start -> goal (all of them if there are at most `cap`), in a
        fixed order (depth first, neighbours in STEPS order); [] if goal is unreachable."""
        to_goal = self.distances(right, down, goal)
        if start not in to_goal:
            return []
        out: list[list[Cell]] = []

        def extend(path: list[Cell]) -> None:
            if len(out) >= cap:
                return
            cell = path[-1]
            if cell == goal:
                out.append(list(path))
                return
            for nb in self.neighbours(cell):
                if self.is_open(right, down, cell, nb) and to_goal.get(nb) == to_goal[cell] - 1:
                    extend([*path, nb])

        extend([start])
        return out

    # --- pixels ----------------------------------------------------------------------------------

    def cell_box(self, cell: Cell, offset: int, size: int) -> Box:
        y, x = cell[0] * self.pitch + offset, cell[1] * self.pitch + offset
        return y, y + size, x, x + size

    def core_box(self, cell: Cell) -> Box:
        """The pixels a reader averages for a cell."""
        return self.cell_box(cell, *self.core)

    def link_box(self, a: Cell, b: Cell) -> Box:
        """The pixels where the band between adjacent cells a and b crosses their shared wall."""
        (r0, c0), (r1, c1) = sorted([a, b])
        before, after = self.link
        off, size = self.core
        if r0 == r1:  # horizontal neighbours: the wall column between them, the band's middle rows
            x = c1 * self.pitch
            return r0 * self.pitch + off, r0 * self.pitch + off + size, x - before, x + after
        y = r1 * self.pitch
        return y - before, y + after, c0 * self.pitch + off, c0 * self.pitch + off + size

    def render(self, right, down, path: list[Cell], moves: int) -> np.ndarray:
        """uint8 [SIZE, SIZE, 3]: walls, the first `moves` moves of `path`, start and goal markers."""
        p, (off, width) = self.pitch, self.band
        frame = blank(WHITE)
        for i in range(self.n):
            frame[i * p, :] = BLACK
            frame[:, i * p] = BLACK
        if self.far_wall:
            frame[SIZE - 1, :] = BLACK
            frame[:, SIZE - 1] = BLACK
        for r, c in zip(*np.nonzero(right), strict=True):
            frame[r * p + 1 : (r + 1) * p, (c + 1) * p] = WHITE
        for r, c in zip(*np.nonzero(down), strict=True):
            frame[(r + 1) * p, c * p + 1 : (c + 1) * p] = WHITE
        for (r0, c0), (r1, c1) in zip(path[:moves], path[1 : moves + 1], strict=True):
            top, left = min(r0, r1) * p + off, min(c0, c1) * p + off
            bottom, right_edge = max(r0, r1) * p + off + width, max(c0, c1) * p + off + width
            frame[top:bottom, left:right_edge] = PATH
        for cell, colour in ((path[0], GREEN), (path[-1], RED)):
            y0, y1, x0, x1 = self.cell_box(cell, off, width)
            frame[y0:y1, x0:x1] = colour
        return frame

    # --- reading ---------------------------------------------------------------------------------

    def painted_cells(self, frame: np.ndarray) -> set[Cell]:
        """Cells whose core reads as the path colour in a float [SIZE, SIZE, 3] 0..255 frame."""
        cells = [(r, c) for r in range(self.n) for c in range(self.n)]
        return self._painted(frame, cells, [self.core_box(cell) for cell in cells])

    def painted_links(self, frame: np.ndarray) -> set[tuple[Cell, Cell]]:
        """Adjacent pairs (sorted) whose shared wall reads as crossed by the path colour."""
        links = self.links()
        return self._painted(frame, links, [self.link_box(a, b) for a, b in links])

    @staticmethod
    def _painted(frame: np.ndarray, items: list, boxes: list[Box]) -> set:
        means = np.stack([frame[y0:y1, x0:x1].reshape(-1, 3).mean(0) for y0, y1, x0, x1 in boxes])
        painted = classify(means, PALETTE) == PALETTE.index(PATH)
        return {item for item, p in zip(items, painted, strict=True) if p}

    def path_elements(self, path: list[Cell]) -> tuple[set[Cell], set[tuple[Cell, Cell]]]:
        """(inner cells, wall crossings) a drawn path paints; start and goal cells are markers."""
        cells = {tuple(cell) for cell in path[1:-1]}
        links = {tuple(sorted((tuple(a), tuple(b)))) for a, b in zip(path, path[1:], strict=False)}
        return cells, links

    def drawn(self, frame: np.ndarray, path: list[Cell]) -> tuple[set[Cell], set[tuple[Cell, Cell]]]:
        """(painted cells without the path's start and goal, painted crossings) of a frame."""
        cells = self.painted_cells(frame) - {tuple(path[0]), tuple(path[-1])}
        return cells, self.painted_links(frame)

    def iou(self, drawn, path: list[Cell]) -> float:
        """IoU of what is drawn (cells, crossings) with a path's inner cells and crossings together."""
        cells, links = drawn
        true_cells, true_links = self.path_elements(path)
        hit = len(cells & true_cells) + len(links & true_links)
        union = len(cells | true_cells) + len(links | true_links)
        return hit / union if union else 1.0


# The shipped maze's layout (`cosjax.data.maze`): 4 x 4 cells of 8 pixels, one cell per toy token.
LATTICE_4 = Lattice(n=4, pitch=8, band=(2, 4), core=(3, 2), link=(1, 2), far_wall=True)
# 8 x 8 cells of 4 pixels: 2 x 2 cells per toy token; every element is whole 2 x 2 pooled blocks.
LATTICE_8 = Lattice(n=8, pitch=4, band=(2, 2), core=(2, 2), link=(0, 2), far_wall=False)


def answer_boxes(lattice: Lattice, path: list[Cell]) -> list[list[int]]:
    """The core boxes [y0, y1, x0, x1] of a path's inner cells (what `cosjax.analysis.phenomena`
    reads to tell whether that answer is present in a frame), JSON-able."""
    return [list(lattice.core_box(tuple(cell))) for cell in path[1:-1]]
