"""First-frame preprocessing as each reference pipeline does it: the video size and the resized image.

Two sampling presets, two reference pipelines (`reference-runs.md` 1 and 2):
  * "official" (Wan2.2 `generate.py`):
      - I2V (`wan/image2video.py`): the image goes to [-1, 1] first, then torch
        `F.interpolate(mode="bicubic")` to the video size: Keys cubic a = -0.75, half-pixel centres,
        edge clamping, no antialiasing when shrinking (here `jax.image.resize(..., "bicubic-pytorch",
        antialias=False)`, the same kernel). The size comes from an area budget `max_area` and the
        image's aspect ratio (`official_i2v_size`).
      - TI2V (`wan/textimage2video.py`): PIL `LANCZOS` on uint8 to the smallest size covering the
        target, then a centre crop (no stretching); the size from `max_area` is `best_output_size`.
  * "vbvr" (DiffSynth `WanVideoPipeline`): the video size is rounded UP to a multiple of
    VAE stride x patch (16 for Wan2.1-VAE models, 32 for TI2V; `check_resize_height_width`), and the
    image is resized with PIL's default filter (BICUBIC, antialiased) on uint8 to exactly that size.

Without `max_area` the video size is the given height/width, else the image's own size (rounded up
in "vbvr"). Every rule returns float32 [3, H, W] in [-1, 1].
"""

from __future__ import annotations

import math
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from cosjax.configs import SAMPLING_PRESETS
from cosjax.outputs import scale_to_uint8

PRESETS = tuple(SAMPLING_PRESETS)  # the first-frame rules, one per sampling preset


def load_rgb(image: Any) -> np.ndarray:
    """An RGB image (PIL image, path, or uint8 / float [H, W, 3] array in [0, 1]) -> its array.

    Returns uint8 [H, W, 3] as given, or float32 [H, W, 3] in [0, 1] for float input."""
    if isinstance(image, str | os.PathLike):
        import imageio.v3 as iio

        image = iio.imread(image)
    arr = np.asarray(image)
    if arr.ndim != 3 or arr.shape[-1] != 3:
        raise ValueError(f"image must be RGB [H, W, 3], got shape {arr.shape}")
    if arr.dtype == np.uint8:
        return arr
    if arr.min() < 0.0 or arr.max() > 1.0:
        raise ValueError("float images must hold values in [0, 1]")
    return arr.astype(np.float32)


def to_uint8(arr: np.ndarray) -> np.ndarray:
    """uint8 [H, W, 3] for PIL: uint8 as is, float [0, 1] rounded to the nearest level."""
    return arr if arr.dtype == np.uint8 else scale_to_uint8(arr, 0.0, 1.0)


def to_signed(arr: np.ndarray) -> np.ndarray:
    """[H, W, 3] uint8 or float [0, 1] -> float32 [3, H, W] in [-1, 1]."""
    x = arr.astype(np.float32) / 255.0 if arr.dtype == np.uint8 else arr.astype(np.float32)
    return (x * 2.0 - 1.0).transpose(2, 0, 1)


def official_i2v_size(height: int, width: int, max_area: int, stride: int, patch: int) -> tuple[int, int]:
    """The official I2V video (H, W) for an image of (height, width) under the area budget `max_area`.

    Latent sides sqrt(max_area * aspect) // stride // patch * patch with aspect = height / width (and
    its inverse for the width), as `WanI2V.generate` computes them; pixels are latents x stride."""
    aspect = height / width
    lat_h = round(math.sqrt(max_area * aspect) // stride // patch * patch)
    lat_w = round(math.sqrt(max_area / aspect) // stride // patch * patch)
    if lat_h < patch or lat_w < patch:
        raise ValueError(f"max_area {max_area} is too small for a {height}x{width} image (size 0)")
    return lat_h * stride, lat_w * stride


def best_output_size(height: int, width: int, multiple: int, max_area: int) -> tuple[int, int]:
    """The official TI2V (H, W): multiples of `multiple` within `max_area`, aspect closest to the
    image's, trying the width first and the height first (`wan/utils/utils.py`)."""
    ratio = width / height
    ow = (max_area * ratio) ** 0.5
    oh = max_area / ow
    w1 = int(ow // multiple * multiple)
    h1 = int(max_area / w1 // multiple * multiple) if w1 else 0
    h2 = int(oh // multiple * multiple)
    w2 = int(max_area / h2 // multiple * multiple) if h2 else 0
    if min(w1, h1, w2, h2) <= 0:
        raise ValueError(f"max_area {max_area} is too small for multiples of {multiple}")
    err1 = max(ratio / (w1 / h1), (w1 / h1) / ratio)
    err2 = max(ratio / (w2 / h2), (w2 / h2) / ratio)
    return (h1, w1) if err1 < err2 else (h2, w2)


def round_up(size: int, multiple: int) -> int:
    return -(-size // multiple) * multiple


def torch_bicubic(pixels: np.ndarray, height: int, width: int) -> np.ndarray:
    """float32 [3, h, w] -> [3, height, width] as torch `F.interpolate(mode="bicubic")` (a = -0.75,
    align_corners False, no antialias; values may overshoot [-1, 1] at hard edges, as there)."""
    if pixels.shape[1:] == (height, width):
        return pixels
    out = jax.image.resize(jnp.asarray(pixels), (3, height, width), "bicubic-pytorch", antialias=False)
    return np.asarray(out, np.float32)


def pil_resize(arr: np.ndarray, height: int, width: int, resample: str) -> np.ndarray:
    """uint8 [h, w, 3] -> uint8 [height, width, 3] with PIL's `resample` filter ("BICUBIC", "LANCZOS")."""
    from PIL import Image

    if arr.shape[:2] == (height, width):
        return arr
    img = Image.fromarray(np.ascontiguousarray(arr)).resize(
        (width, height), getattr(Image.Resampling, resample)
    )
    return np.asarray(img)


def cover_crop(arr: np.ndarray, height: int, width: int) -> np.ndarray:
    """uint8 [h, w, 3] -> [height, width, 3]: PIL LANCZOS to the smallest size covering the target,
    then the centre crop (official TI2V)."""
    ih, iw = arr.shape[:2]
    scale = max(width / iw, height / ih)
    resized = pil_resize(arr, round(ih * scale), round(iw * scale), "LANCZOS")
    y0, x0 = (resized.shape[0] - height) // 2, (resized.shape[1] - width) // 2
    return resized[y0 : y0 + height, x0 : x0 + width]


def video_size(
    image_hw: tuple[int, int] | None,
    preset: str,
    model_type: str,
    stride: tuple[int, int],
    patch: tuple[int, int],
    default_hw: tuple[int, int],
    height: int | None = None,
    width: int | None = None,
    max_area: int | None = None,
) -> tuple[int, int]:
    """The video (H, W) of a run before the tiling check.

    Args:
      image_hw: the first frame's (h, w), or None (T2V).
      preset: "official" or "vbvr".
      model_type: "t2v", "i2v" or "ti2v" (the official area rule differs for TI2V).
      stride, patch: the VAE's spatial stride and the DiT's patch on (H, W); their product is what
        a size must be a multiple of (16 for Wan2.1-VAE models, 32 for TI2V).
      default_hw: the model's default size, used without image, height/width or max_area.
      height, width: an explicit size (both or neither); wins over `max_area`.
      max_area: the official scripts' area budget (e.g. 720 * 1280), from the image's aspect ratio.
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown preprocessing preset {preset!r}; use one of {', '.join(PRESETS)}")
    if (height is None) != (width is None):
        raise ValueError(f"give both height and width or neither, got height={height}, width={width}")
    multiple = (stride[0] * patch[0], stride[1] * patch[1])
    if height is not None:
        h, w = int(height), int(width)
    elif max_area is not None:
        if image_hw is None:
            raise ValueError("max_area sizes a video from its first frame; give height/width without one")
        if model_type == "ti2v":
            h, w = best_output_size(*image_hw, multiple[0], int(max_area))
        else:
            h, w = official_i2v_size(*image_hw, int(max_area), stride[0], patch[0])
    else:
        h, w = image_hw if image_hw is not None else default_hw
    if preset == "vbvr":  # DiffSynth rounds every size up to its division factor
        h, w = round_up(h, multiple[0]), round_up(w, multiple[1])
    return h, w


def first_frame(image: np.ndarray, height: int, width: int, preset: str, model_type: str) -> np.ndarray:
    """The conditioning frame float32 [3, height, width] in [-1, 1] from `load_rgb(image)`, resized by
    the rule of `preset` and `model_type` (see the module docstring)."""
    if preset == "vbvr":
        return to_signed(pil_resize(to_uint8(image), height, width, "BICUBIC"))
    if preset != "official":
        raise ValueError(f"unknown preprocessing preset {preset!r}; use one of {', '.join(PRESETS)}")
    if model_type == "ti2v":
        if image.shape[:2] == (height, width):
            return to_signed(image)
        return to_signed(cover_crop(to_uint8(image), height, width))
    return torch_bicubic(to_signed(image), height, width)
