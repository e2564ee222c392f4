"""A tiny VBVR-Bench-Data folder in the published layout, and its manifest (`VBVR-Bench.json`)."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import imageio.v2 as imageio
import numpy as np

from cosjax.data import vbvr_bench as vb
from cosjax.outputs import write_mp4

# 2 in-domain tasks + 1 out-of-domain task, 2 samples each; GT videos of 9 and 13 frames.
TASKS = {
    "In-Domain_50": ["G-3_stable_sort_data-generator", "O-10_shape_outline_fill_data-generator"],
    "Out-of-Domain_50": ["O-39_maze_data-generator"],
}
GT_FRAMES = (9, 13)
H, W = 32, 48


def make_bench(
    root: Path,
    seed: int = 0,
    tasks: dict[str, list[str]] = TASKS,
    gt_frames: tuple[int, ...] = GT_FRAMES,
    size: tuple[int, int] = (H, W),
) -> Path:
    """A tiny VBVR-Bench-Data folder in the real layout: per split of `tasks`, per task, one sample
    per entry of `gt_frames` (its GT video's frame count); `size` (H, W) RGB pngs, constant-frame GT
    mp4s (the first frame, then the final one), and the manifest."""
    h, w = size
    rng = np.random.default_rng(seed)
    for split, names in tasks.items():
        for task in names:
            for i, n in enumerate(gt_frames):
                d = root / split / task / f"{i:05d}"
                d.mkdir(parents=True)
                first = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
                final = np.full((h, w, 3), rng.integers(40, 220), np.uint8)
                imageio.imwrite(d / "first_frame.png", first)
                imageio.imwrite(d / "final_frame.png", final)
                write_mp4(d / "ground_truth.mp4", [first] * (n - 1) + [final], fps=16, quality=5)
                (d / "prompt.txt").write_text(f"  Solve {task} case {i}.\n")
    write_manifest(root)
    (root / "README.md").write_text("VBVR-Bench\n")  # other files at the root are ignored
    return root


def write_manifest(root: Path) -> Path:
    """ROOT/VBVR-Bench.json as published: a list of one entry per sample folder on disk."""
    entries = []
    for d in sorted(root.glob("*/*/[0-9][0-9][0-9][0-9][0-9]")):
        rel = d.relative_to(root).as_posix()
        entries.append(
            {
                "id": rel.replace("/", "_"),
                "prompt": (d / "prompt.txt").read_text().strip(),
                "first_image": base64.b64encode((d / "first_frame.png").read_bytes()).decode(),
                "first_frame_path": f"{rel}/first_frame.png",
                "final_frame_path": f"{rel}/final_frame.png",
                "prompt_path": f"{rel}/prompt.txt",
                "ground_truth_video_path": f"{rel}/ground_truth.mp4",
            }
        )
    (root / vb.MANIFEST).write_text(json.dumps(entries, indent=1))
    return root / vb.MANIFEST
