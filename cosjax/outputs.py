"""Decoded videos and images to uint8 and to files: the one place for both.

Two uint8 rules, on purpose:
  * `to_uint8(video, preset)`: as each reference pipeline quantises its decoded video (truncation);
    what reference-comparable outputs (saved videos, scored frames) use.
      - "official" (Wan2.2 `wan/utils/utils.py save_video`): clamp to [-1, 1], (x + 1) / 2 in float32
        (torchvision `make_grid(normalize=True, value_range=(-1, 1))`), times 255, truncated to uint8;
        imageio `quality=8`.
      - "vbvr" (DiffSynth `vae_output_to_image` on the bf16 VAE output, then `save_video(quality=5)`):
        the decoder's clamp to [-1, 1] in bf16, then (x - (-1)) and * 127.5 each rounded to bf16,
        clipped to [0, 255] and truncated to uint8; imageio `quality=5` (libx264 CRF 25).
    Truncation instead of rounding moves about half the values one level down, so scores computed
    on the frames depend on it.
  * `scale_to_uint8(x, lo, hi)`: a linear map of [lo, hi] to [0, 255], clipped and rounded to the
    nearest level; for figures, heatmaps and user images, never for reference outputs.

Files, each written whole or not at all (`cosjax.paths.staged_file`; a URL is uploaded once complete):
  * `write_mp4`: uint8 frames as H.264 (imageio-ffmpeg, yuv420p), streamed frame by frame.
  * `write_png`: a uint8 image.
  * `encode_gif`: uint8 frames as animated-GIF bytes (TensorBoard videos).
"""

from __future__ import annotations

import contextlib
import io
import os
import warnings
from collections.abc import Iterable, Iterator

import ml_dtypes
import numpy as np

from cosjax.configs import SAMPLING_PRESETS
from cosjax.paths import staged_file, user_path, write_atomic

VIDEO_QUALITY = {name: p.video_quality for name, p in SAMPLING_PRESETS.items()}
"""imageio quality (libx264 CRF) each reference pipeline saves its videos with."""


def _bf16(a: np.ndarray) -> np.ndarray:
    return a.astype(ml_dtypes.bfloat16).astype(np.float32)


def to_uint8(video, preset: str) -> np.ndarray:
    """Video values in [-1, 1] (any shape, any float dtype) -> uint8 of the same shape, by the rule of
    sampling preset `preset` ("official" or "vbvr")."""
    x = np.clip(np.asarray(video, np.float32), -1.0, 1.0)
    if preset == "official":
        x = (x + np.float32(1.0)) / np.float32(2.0) * np.float32(255.0)
    elif preset == "vbvr":
        x = np.clip(_bf16(_bf16(_bf16(x) + np.float32(1.0)) * np.float32(127.5)), 0.0, 255.0)
    else:
        raise ValueError(f"unknown output preset {preset!r}; use one of {', '.join(VIDEO_QUALITY)}")
    return x.astype(np.uint8)  # truncates toward zero, as torch's .to(uint8)


def scale_to_uint8(x, lo: float = -1.0, hi: float = 1.0) -> np.ndarray:
    """Linearly maps [lo, hi] to [0, 255], clipping outside, rounding: any shape -> uint8, same shape.

    Computed in float64; the default [-1, 1] is the range of decoded videos (`Pipeline.decode`).
    Not the reference quantisation (that truncates: `to_uint8`).
    """
    if not hi > lo:
        raise ValueError(f"need hi > lo, got lo={lo}, hi={hi}")
    x = (np.asarray(x, np.float64) - lo) / (hi - lo)
    return np.round(np.clip(x, 0.0, 1.0) * 255.0).astype(np.uint8)


@contextlib.contextmanager
def quiet_fork() -> Iterator[None]:
    """Silences JAX's warning about os.fork for subprocesses that exec at once (ffmpeg, the EvalKit)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "os.fork", RuntimeWarning)
        yield


def write_mp4(
    path: str | os.PathLike, frames_uint8: np.ndarray | Iterable[np.ndarray], fps: int, quality: float
):
    """Writes uint8 [F, H, W, 3] frames (or an iterable of [H, W, 3] ones) as an H.264 mp4, atomically;
    returns `path` as a user path (`cosjax.paths.user_path`).

    Frames go to a hidden temporary file in the same folder (`.NAME.PID-RANDOM.tmp.mp4`, never matched
    by the EvalKit's `\\d{5}.mp4` pattern; its mode follows the umask), which replaces `path` only once
    complete; on any error it is deleted and an existing `path` is left untouched. `quality`: imageio's
    (`VIDEO_QUALITY` per preset). `macro_block_size=1`: H and W are kept
    (libx264's yuv420p needs them even).

    Raises:
      ValueError: a frame that is not uint8 [H, W, 3], or no frames.
    """
    import imageio.v2 as imageio

    path = user_path(path)
    with staged_file(path, suffix=".tmp" + path.suffix) as tmp, quiet_fork():  # ffmpeg starts now
        writer = imageio.get_writer(tmp, format="FFMPEG", fps=fps, quality=quality, macro_block_size=1)
        try:
            n = 0
            for frame in frames_uint8:
                frame, n = np.asarray(frame), n + 1
                if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[-1] != 3:
                    raise ValueError(f"frames must be uint8 [H, W, 3], got {frame.dtype} {frame.shape}")
                writer.append_data(frame)
            if n == 0:
                raise ValueError(f"no frames to write to {path}")
        finally:
            writer.close()
    return path


def write_png(path: str | os.PathLike, image: np.ndarray):
    """Writes a uint8 [H, W, 3] (or [H, W]) image as a PNG, atomically; returns `path` as a user path."""
    import imageio.v3 as iio

    path = user_path(path)
    write_atomic(path, iio.imwrite("<bytes>", np.asarray(image, np.uint8), extension=".png"))
    return path


def encode_gif(frames_uint8: np.ndarray, fps: int) -> bytes:
    """uint8 [F, H, W, 3] frames -> the bytes of an endlessly looping animated GIF."""
    import imageio.v3 as iio

    buffer = io.BytesIO()
    iio.imwrite(buffer, np.asarray(frames_uint8, np.uint8), extension=".gif", duration=1000 / fps, loop=0)
    return buffer.getvalue()
