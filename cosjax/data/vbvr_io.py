"""Writing a case in the VBVR layout: first_frame.png, final_frame.png, ground_truth.mp4, prompt.txt.

A metadata.json (family, seed, held_out, prompt id, solution) is written too, as VBVR's training
samples carry one; it is enough to regenerate the case and score a video against it.
"""

from __future__ import annotations

import json
from pathlib import Path

import imageio.v2 as imageio
import numpy as np

from cosjax.data.case import Case
from cosjax.outputs import write_mp4, write_png
from cosjax.paths import write_atomic

FPS = 8


def write_vbvr_case(case: Case, folder: str | Path, fps: int = FPS) -> Path:
    """Writes the case's files into `folder` (created if needed) and returns the folder.

    The mp4 is H.264 yuv420p (what players and OpenCV read); its chroma is subsampled and lossy, so
    train from the arrays, not from the mp4.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    write_png(folder / "first_frame.png", case.first_frame)
    write_png(folder / "final_frame.png", case.final_frame)
    write_mp4(folder / "ground_truth.mp4", case.video, fps=fps, quality=10)
    write_atomic(folder / "prompt.txt", case.prompt)
    meta = {
        "family": case.family,
        "seed": case.seed,
        "held_out": case.held_out,
        "prompt_id": case.prompt_id,
        "solution": case.solution,
    }
    write_atomic(folder / "metadata.json", json.dumps(meta))
    return folder


def read_video(path: str | Path) -> np.ndarray:
    """uint8 [F, H, W, 3]: the frames of an mp4."""
    return np.stack(imageio.mimread(path, memtest=False))
