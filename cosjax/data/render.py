"""Drawing and reading cell grids on small RGB frames, robustly to blur and noise.

Colours are RGB in 0..255. Readers average a small core inside each cell and classify the mean by the
nearest palette colour, so they tolerate the blur and noise of a diffusion model's output.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cosjax.data.case import SIZE

WHITE = (255, 255, 255)
BLACK = (0, 0, 0)
GREY = (128, 128, 128)
RED = (230, 30, 30)
GREEN = (30, 200, 30)
BLUE = (40, 80, 255)
YELLOW = (240, 220, 30)
MAGENTA = (220, 40, 220)
CYAN = (30, 220, 220)
# The colours objects and pattern blocks take (index = colour id).
COLOURS: tuple[tuple[int, int, int], ...] = (RED, GREEN, BLUE, YELLOW, MAGENTA, CYAN)
MAX_DIST = 110.0  # a core mean farther than this from every palette colour is "unknown" (-1)


@dataclass(frozen=True)
class Grid:
    """Cells on a regular lattice. Boxes are (dy, dx, h, w) relative to a cell's lattice corner.

    Cell (r, c) has its corner at origin + (r * pitch[0], c * pitch[1]); `fill` is the block drawn
    for the cell, `core` the region a reader averages (kept away from edges that blur into it).
    """

    rows: int
    cols: int
    pitch: tuple[int, int]
    fill: tuple[int, int, int, int]
    core: tuple[int, int, int, int]
    origin: tuple[int, int] = (0, 0)

    def _box(self, r: int, c: int, box: tuple[int, int, int, int]) -> tuple[slice, slice]:
        y = self.origin[0] + r * self.pitch[0] + box[0]
        x = self.origin[1] + c * self.pitch[1] + box[1]
        return slice(y, y + box[2]), slice(x, x + box[3])

    def paint(self, frame: np.ndarray, r: int, c: int, colour) -> None:
        """Fills cell (r, c) of a uint8 [H, W, 3] frame in place."""
        frame[self._box(r, c, self.fill)] = colour

    def read(self, frame: np.ndarray) -> np.ndarray:
        """float32 [rows, cols, 3]: the mean colour of each cell's core."""
        out = np.empty((self.rows, self.cols, 3), np.float32)
        for r in range(self.rows):
            for c in range(self.cols):
                out[r, c] = frame[self._box(r, c, self.core)].reshape(-1, 3).mean(0)
        return out


def blank(colour) -> np.ndarray:
    """uint8 [SIZE, SIZE, 3] filled with one colour."""
    frame = np.empty((SIZE, SIZE, 3), np.uint8)
    frame[:] = colour
    return frame


def classify(colours: np.ndarray, palette, max_dist: float = MAX_DIST) -> np.ndarray:
    """int [...]: index of the nearest palette colour for float [..., 3] colours, -1 if none is close."""
    pal = np.asarray(palette, np.float32)
    dist = np.linalg.norm(colours[..., None, :] - pal, axis=-1)
    labels = dist.argmin(-1)
    return np.where(dist.min(-1) <= max_dist, labels, -1)


def last_frame(video) -> np.ndarray:
    """float32 [SIZE, SIZE, 3] in 0..255 from a video [F, SIZE, SIZE, 3] or a frame [SIZE, SIZE, 3].

    uint8 input is used as is; float input must already be on the 0..255 scale (it is clipped).
    """
    arr = np.asarray(video)
    frame = arr[-1] if arr.ndim == 4 else arr
    if frame.shape != (SIZE, SIZE, 3):
        raise ValueError(f"expected a [{SIZE}, {SIZE}, 3] frame or a video of them, got {arr.shape}")
    return np.clip(frame.astype(np.float32), 0.0, 255.0)
