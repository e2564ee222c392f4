"""Pure-numpy image helpers for the paper's figures; every image is uint8 [H, W, 3] (HWC).

  * `step_frame_grid`: the x0_hat grid of the paper's Fig. 1-2, rows = denoising steps,
    columns = video frames.
  * `heatmap`: viridis heatmaps of token energy, min-max scaled per panel by default (as the
    paper's token tool, which lets matplotlib autoscale every panel) or on a shared lo / hi.
  * `grid`, `upscale`, `video_frames`: assembly and conversion (uint8 by `cosjax.outputs.scale_to_uint8`).

Write the results with `cosjax.tensorboard.Writer.image` / `.video`.
"""

from __future__ import annotations

import numpy as np

from cosjax.outputs import scale_to_uint8

# Viridis (van der Walt, Smith and Firing; CC0), the published 256-entry table sampled at every 15th
# entry (0, 15, ..., 255), i.e. at t = k / 17. Linear interpolation between these anchors stays
# within 5 / 255 per channel of the full table.
VIRIDIS_ANCHORS = np.array(
    [
        (0.267004, 0.004874, 0.329415),
        (0.281924, 0.089666, 0.412415),
        (0.280255, 0.165693, 0.476498),
        (0.263663, 0.237631, 0.518762),
        (0.237441, 0.305202, 0.541921),
        (0.208623, 0.367752, 0.552675),
        (0.182256, 0.426184, 0.557120),
        (0.159194, 0.482237, 0.558073),
        (0.137770, 0.537492, 0.554906),
        (0.121148, 0.592739, 0.544641),
        (0.128087, 0.647749, 0.523491),
        (0.180653, 0.701402, 0.488189),
        (0.274149, 0.751988, 0.436601),
        (0.395174, 0.797475, 0.367757),
        (0.535621, 0.835785, 0.281908),
        (0.688944, 0.865448, 0.182725),
        (0.845561, 0.887322, 0.099702),
        (0.993248, 0.906157, 0.143936),
    ],
    np.float64,
)

NAN_COLOR = (255, 255, 255)
"""Colour of non-finite heatmap values (matplotlib leaves them blank)."""


def video_frames(video: np.ndarray, lo: float = -1.0, hi: float = 1.0) -> np.ndarray:
    """Decoded video [..., 3, F, H, W] float (e.g. one sample of `Pipeline.decode`) -> uint8
    [..., F, H, W, 3] frames for `step_frame_grid` or `Writer.video`."""
    video = np.asarray(video)
    if video.ndim < 4 or video.shape[-4] != 3:
        raise ValueError(f"need a video [..., 3, F, H, W], got shape {video.shape}")
    return scale_to_uint8(np.moveaxis(video, -4, -1), lo, hi)


def grid(tiles: np.ndarray, pad: int = 1, pad_value: int = 255) -> np.ndarray:
    """Tiles [R, C, H, W, ch] -> one image [R * (H + pad), C * (W + pad), ch], same dtype.

    Tile (r, c) sits at rows r * (H + pad) : r * (H + pad) + H and columns c * (W + pad) : ... + W;
    each tile is followed by `pad` rows / columns of `pad_value` (also after the last one).
    """
    tiles = np.asarray(tiles)
    if tiles.ndim != 5:
        raise ValueError(f"need tiles [R, C, H, W, ch], got shape {tiles.shape}")
    if pad < 0:
        raise ValueError(f"pad must be >= 0, got {pad}")
    r, c, h, w, ch = tiles.shape
    cells = np.full((r, c, h + pad, w + pad, ch), pad_value, tiles.dtype)
    cells[:, :, :h, :w] = tiles
    return cells.transpose(0, 2, 1, 3, 4).reshape(r * (h + pad), c * (w + pad), ch)


def step_frame_grid(videos: np.ndarray, pad: int = 1, pad_value: int = 255) -> np.ndarray:
    """The x0_hat grid: videos uint8 [steps, F, H, W, 3] -> uint8 [steps * (H + pad), F * (W + pad), 3],
    row s = denoising step s (x0_hat decoded at that step), column f = frame f (paper Fig. 1-2)."""
    videos = np.asarray(videos)
    if videos.ndim != 5 or videos.shape[-1] != 3:
        raise ValueError(f"need videos [steps, F, H, W, 3], got shape {videos.shape}")
    return grid(videos, pad, pad_value)


def viridis(t: np.ndarray) -> np.ndarray:
    """Viridis colours of t in [0, 1] (clipped): any shape [...] -> uint8 [..., 3].

    0 -> (68, 1, 84) dark purple, 1 -> (253, 231, 37) yellow; linear between `VIRIDIS_ANCHORS`.
    """
    t = np.clip(np.asarray(t, np.float64), 0.0, 1.0)
    pos = np.linspace(0.0, 1.0, len(VIRIDIS_ANCHORS))
    rgb = np.stack([np.interp(t, pos, VIRIDIS_ANCHORS[:, i]) for i in range(3)], axis=-1)
    return scale_to_uint8(rgb, 0.0, 1.0)


def heatmap(values: np.ndarray, lo: float | None = None, hi: float | None = None) -> np.ndarray:
    """Viridis heatmap(s): values [..., H, W] -> uint8 [..., H, W, 3].

    Scaling: lo / hi left None are each panel's own finite min / max over its last two axes (the
    paper's per-panel autoscale); give both for a scale shared by all panels. A panel with hi == lo
    maps to the lowest colour. Non-finite values get `NAN_COLOR`.
    """
    v = np.asarray(values, np.float64)
    if v.ndim < 2:
        raise ValueError(f"need values [..., H, W], got shape {v.shape}")
    finite = np.isfinite(v)
    big = np.finfo(np.float64).max
    if lo is None:
        lo_arr = np.min(np.where(finite, v, big), axis=(-2, -1), keepdims=True)
    else:
        lo_arr = np.float64(lo)
    if hi is None:
        hi_arr = np.max(np.where(finite, v, -big), axis=(-2, -1), keepdims=True)
    else:
        hi_arr = np.float64(hi)
    span = hi_arr - lo_arr
    with np.errstate(invalid="ignore", over="ignore"):
        t = np.where(span > 0, (v - lo_arr) / np.where(span > 0, span, 1.0), 0.0)
    rgb = viridis(np.where(finite, t, 0.0))
    rgb[~finite] = NAN_COLOR
    return rgb


def upscale(img: np.ndarray, k: int) -> np.ndarray:
    """Nearest-neighbour upscaling by an integer k, same dtype.

    [H, W] -> [kH, kW]; [..., H, W, ch] -> [..., kH, kW, ch] (e.g. a token-grid heatmap to pixels).
    """
    img = np.asarray(img)
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    axes = (0, 1) if img.ndim == 2 else (img.ndim - 3, img.ndim - 2)
    for axis in axes:
        img = np.repeat(img, k, axis=axis)
    return img
