"""Labelled figures of the experiments' measures (matplotlib, Agg canvas; no display needed).

Every `*_figure` function returns a `matplotlib.figure.Figure` of a known pixel size (`width` x
`height` pixels at `DPI`, no tight bounding box), built on `Figure` and the Agg canvas directly,
never on pyplot: no global state, no GUI backend. `render(fig)` turns a figure into uint8
[height, width, 3]; `save(fig, path, writer, tag)` writes that as a PNG (atomic,
`cosjax.outputs.write_png`) and logs it to TensorBoard (`cosjax.tensorboard.Writer.image`).

Missing values (None) are drawn as gaps (NaN).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from cosjax.analysis.images import step_frame_grid, upscale
from cosjax.outputs import write_png

DPI = 100
SIZE = (640, 400)  # default figure size in pixels (width, height)


def new_figure(width: int = SIZE[0], height: int = SIZE[1]) -> Figure:
    """An empty figure of `width` x `height` pixels on an Agg canvas."""
    # Agg truncates width x DPI to an int: half a pixel more keeps float rounding from losing one.
    fig = Figure(figsize=((width + 0.5) / DPI, (height + 0.5) / DPI), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def render(fig: Figure) -> np.ndarray:
    """The figure's pixels: uint8 [height, width, 3] (alpha dropped)."""
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()


def save(fig: Figure, path, writer=None, tag: str | None = None, step: int = 0) -> np.ndarray:
    """Renders `fig`, writes it to `path` as a PNG (atomic) and, given a writer and tag, logs it to
    TensorBoard at `step`; returns the uint8 [H, W, 3] image."""
    image = render(fig)
    write_png(path, image)
    if writer is not None and tag is not None:
        writer.image(tag, image, step)
    return image


def _floats(values) -> np.ndarray:
    return np.asarray([np.nan if v is None else float(v) for v in values], np.float64)


def grid_row_labels(steps: Sequence[int], sigmas: Sequence[float]) -> list[str]:
    """One label per grid row: "step s  σ=0.950" (the step's index and its noise level)."""
    if len(steps) != len(sigmas):
        raise ValueError(f"{len(steps)} steps but {len(sigmas)} sigmas")
    return [f"step {s}  σ={float(sigma):.3f}" for s, sigma in zip(steps, sigmas, strict=True)]


def step_frame_grid_figure(
    videos: np.ndarray, steps: Sequence[int], sigmas: Sequence[float], title: str, scale: int = 2
) -> Figure:
    """The x0-hat grid, labelled: videos uint8 [R, F, H, W, 3] (row r = the x0-hat decoded at step
    steps[r], of noise level sigmas[r]) -> rows labelled by `grid_row_labels`, columns by frame index.

    The grid (`step_frame_grid` of the videos magnified `scale` times) is drawn pixel for pixel,
    with margins for the labels; the figure's y tick labels are the row labels.
    """
    videos = np.asarray(videos)
    if videos.ndim != 5 or len(videos) != len(steps):
        raise ValueError(f"need videos [R, F, H, W, 3] with R = {len(steps)} rows, got {videos.shape}")
    labels = grid_row_labels(steps, sigmas)
    image = step_frame_grid(upscale(videos, scale))
    rows, frames, h = videos.shape[0], videos.shape[1], videos.shape[2] * scale
    w = videos.shape[3] * scale
    left, right, top, bottom = 150, 20, 50, 50
    width, height = image.shape[1] + left + right, image.shape[0] + top + bottom
    fig = new_figure(width, height)
    ax = fig.add_axes((left / width, bottom / height, image.shape[1] / width, image.shape[0] / height))
    ax.imshow(image, interpolation="nearest", aspect="auto")
    ax.set_yticks([r * (h + 1) + h / 2 for r in range(rows)], labels, fontsize=8)
    ax.set_xticks([f * (w + 1) + w / 2 for f in range(frames)], [str(f) for f in range(frames)], fontsize=8)
    ax.set_xlabel("frame index")
    ax.set_title(title, fontsize=10)
    return fig


def curves_figure(
    x: Sequence[float],
    curves: Mapping[str, Sequence[float | None]],
    xlabel: str,
    ylabel: str,
    title: str,
    ylim: tuple[float, float] | None = None,
) -> Figure:
    """Line plot: one line with markers per entry of `curves` ({legend label: y [len(x)]})."""
    fig = new_figure()
    ax = fig.add_subplot()
    for label, y in curves.items():
        ax.plot(x, _floats(y), marker="o", markersize=3, label=label)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # steps and layers are whole numbers
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.grid(alpha=0.3)
    if curves:
        ax.legend(fontsize=7)
    fig.subplots_adjust(left=0.12, right=0.97, top=0.9, bottom=0.13)
    return fig


def bars_figure(
    labels: Sequence[str],
    values: Sequence[float | None],
    xlabel: str,
    ylabel: str,
    title: str,
    marked: Sequence[int] = (),
    mark_label: str = "",
) -> Figure:
    """Bar chart: values [N] at `labels` [N]; the bars at indices `marked` hatched, in another colour
    and named in the legend by `mark_label` (e.g. the frame the scorer reads)."""
    fig = new_figure()
    ax = fig.add_subplot()
    y = _floats(values)
    colours = ["tab:red" if i in marked else "tab:blue" for i in range(len(y))]
    bars = ax.bar(range(len(y)), np.nan_to_num(y), color=colours)
    ax.bar_label(bars, labels=["-" if np.isnan(v) else f"{v:.3f}" for v in y], fontsize=7)
    for i in marked:
        bars[i].set_hatch("//")
        bars[i].set_label(mark_label)
    ax.set_xticks(range(len(y)), list(labels))
    ax.axhline(0.0, color="black", linewidth=0.8)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    if len(marked) and mark_label:
        ax.legend(fontsize=7)
    fig.subplots_adjust(left=0.12, right=0.97, top=0.9, bottom=0.13)
    return fig


def interval_figure(
    labels: Sequence[str],
    means: Sequence[float],
    lows: Sequence[float],
    highs: Sequence[float],
    ylabel: str,
    title: str,
) -> Figure:
    """Point estimates with intervals: means [N] with error bars from lows [N] to highs [N], one per
    label, and a dashed line at 0 (no gain)."""
    mean, lo, hi = _floats(means), _floats(lows), _floats(highs)
    fig = new_figure(max(SIZE[0], 60 * len(mean) + 160), SIZE[1] + 60)
    ax = fig.add_subplot()
    x = np.arange(len(mean))
    # clipped: a percentile interval may miss its mean by float rounding (identical resamples)
    yerr = np.clip([mean - lo, hi - mean], 0.0, None)
    ax.errorbar(x, mean, yerr=yerr, fmt="o", capsize=4)
    ax.axhline(0.0, color="grey", linestyle="--", linewidth=0.8)
    ax.set_xticks(x, list(labels), rotation=40, ha="right", fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3, axis="y")
    fig.subplots_adjust(left=0.12, right=0.97, top=0.9, bottom=0.3)
    return fig


def heatmap_figure(
    values: np.ndarray,
    row_labels: Sequence[str],
    col_labels: Sequence[str],
    xlabel: str,
    ylabel: str,
    title: str,
    colorbar_label: str,
) -> Figure:
    """Heatmap of values [R, C] (viridis, NaN blank) with labelled rows and columns and a colour bar."""
    v = np.asarray(values, np.float64)
    if v.shape != (len(row_labels), len(col_labels)):
        raise ValueError(f"values {v.shape} vs {len(row_labels)} row and {len(col_labels)} column labels")
    fig = new_figure()
    ax = fig.add_subplot()
    im = ax.imshow(v, cmap="viridis", aspect="auto", interpolation="nearest")
    ax.set_yticks(range(len(row_labels)), list(row_labels), fontsize=7)
    ax.set_xticks(range(len(col_labels)), list(col_labels), fontsize=7)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    fig.colorbar(im, ax=ax, label=colorbar_label)
    return fig
