"""Decoded videos to uint8 and to mp4 as each reference pipeline writes them.

  * "official" (Wan2.2 `wan/utils/utils.py save_video`): clamp to [-1, 1], (x + 1) / 2 in float32
    (torchvision `make_grid(normalize=True, value_range=(-1, 1))`), times 255, truncated to uint8;
    imageio `quality=8`.
  * "vbvr" (DiffSynth `vae_output_to_image` on the bf16 VAE output, then `save_video(quality=5)`):
    the decoder's clamp to [-1, 1] in bf16, then (x - (-1)) and * 127.5 each rounded to bf16, clipped
    to [0, 255] and truncated to uint8; imageio `quality=5` (libx264 CRF 25).
Truncation instead of rounding moves about half the values one level down, so scores computed on
the frames depend on it.
"""

from __future__ import annotations

import ml_dtypes
import numpy as np

VIDEO_QUALITY = {"official": 8, "vbvr": 5}


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
