"""The toy model folder: toy.json (format tag, configs, latent space, sampling preset, prompt
embeddings, reference check) beside toy.safetensors (the DiT parameters).

toy.safetensors: the DiT parameters, float32, keys '/'-joined tree paths ("blocks/ffn_0/kernel";
  block leaves stacked on a leading layer axis).
toy.json: the format tag, the DiT config, the video shape, the latent space ("delta" or "pixel",
  pool, stride, scale; see `cosjax.toy.codec.encode_videos`), the recommended sampling settings,
  the prompt embeddings float32 [num_prompts, text_len, text_dim] as nested lists, and what the
  writer adds (the trainer: step, training config, data fingerprint; `experiments/toy_preset.py`:
  the preset sweep and the `reference_check`).

Writes are atomic: `save_toy` builds the folder in a temporary sibling renamed into place,
`update_meta` replaces toy.json by rename.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from cosjax.configs import DiTConfig
from cosjax.paths import building, check_destination, require_local, user_path, write_atomic
from cosjax.toy.config import IMAGE_CHANNELS

TOY_FORMAT = "cosjax-pixel-toy"
TOY_FILE = "toy.json"
TOY_WEIGHTS = "toy.safetensors"
EMBEDDED_MODEL = Path(__file__).parents[1] / "assets" / "toy"


def local_folder(path: str | Path, what: str) -> Path:
    """`path` (absolute) if local; a ValueError naming `what` for a URL (toy folders are written locally)."""
    return require_local(user_path(path), what, "train and export locally, then copy the folder")


def save_toy(
    out_path: str | Path,
    model: DiTConfig,
    params: Any,
    table: np.ndarray,
    video_shape: tuple[int, int, int],
    sampling: dict | None = None,
    extra: dict | None = None,
    *,
    space: str = "delta",
    pool: int = 1,
    stride: int = 1,
    scale: float = 1.0,
) -> Path:
    """Writes a toy model folder (the layout above) from parameters, atomically.

    `out_path` must be absent, an empty folder, or an earlier toy folder (holding toy.json), which is
    replaced only once the new one is complete; anything else is refused (`check_destination`).

    Args:
      model: the DiT config (in_dim 10, out_dim 3, "i2v").
      params: its parameter tree (cast to float32).
      table: float32 [num_prompts, text_len, text_dim] prompt embeddings.
      video_shape: (frames, height, width) the model generates.
      sampling: recommended sampling settings (defaults: 20 Euler steps on the DiffSynth grid,
        shift 3, guidance 3).
      extra: more JSON-able metadata (training step, config, data fingerprint).
      space, pool, stride, scale: the latent space (see `cosjax.toy.codec.encode_videos`).
    """
    from flax import traverse_util
    from safetensors.numpy import save_file

    out_path = local_folder(out_path, "the toy model folder")
    check_destination(out_path, TOY_FILE, overwrite=True, what="toy model folder")
    flat = traverse_util.flatten_dict(jax.device_get(params), sep="/")
    f, h, w = video_shape
    meta = {
        "format": TOY_FORMAT,
        "version": 2,
        **(extra or {}),
        "dit_config": model.to_dict(),
        "video_shape": {"frames": f, "height": h, "width": w, "channels": IMAGE_CHANNELS},
        "space": space,
        "pool": pool,
        "stride": stride,
        "scale": scale,
        "layout": {
            "x": "float32 [B, 3, F', H', W']: encode_videos(video, space, pool, stride, scale)",
            "y": "float32 [B, 7, F', H', W']: 4 mask channels (ones on frame 0) + first frame on frame 0",
            "context": "prompt_embeddings[prompt_id]: float32 [B, text_len, text_dim]",
            "negative": "zeros like context (the CFG null used in training)",
        },
        "sampling": {
            "shift": 3.0,
            "guide_scale": 3.0,
            "steps": 20,
            "grid": "diffsynth",
            "solver": "euler",
            **(sampling or {}),
        },
        "prompt_embeddings": np.asarray(table, np.float32).tolist(),
    }
    with building(out_path) as tmp:
        save_file({k: np.asarray(v, np.float32) for k, v in flat.items()}, str(tmp / TOY_WEIGHTS))
        (tmp / TOY_FILE).write_text(json.dumps(meta))
    return out_path


def load_toy(path: str | Path):
    """Loads a toy model folder: (LoadedDiT, meta dict, prompt embeddings float32 [P, L_txt, text_dim]).

    Raises:
      ValueError: not a toy export, or its weights do not match its config (missing/extra keys,
        wrong shapes).
    """
    from flax import traverse_util
    from safetensors.numpy import load as load_bytes

    from cosjax.models.dit import abstract_params
    from cosjax.weights.loading import LoadedDiT

    path = user_path(path)  # local or a URL: both files are read whole (a toy model is small)
    meta_file, weights_file = path / TOY_FILE, path / TOY_WEIGHTS
    if not meta_file.exists() or not weights_file.exists():
        raise FileNotFoundError(f"{path} is not a toy model folder (needs {TOY_FILE} and {TOY_WEIGHTS})")
    meta = json.loads(meta_file.read_text())
    if meta.get("format") != TOY_FORMAT:
        raise ValueError(f"{meta_file} is not a {TOY_FORMAT} export")
    config = DiTConfig.from_dict(meta["dit_config"])
    flat = load_bytes(weights_file.read_bytes())
    expected = traverse_util.flatten_dict(abstract_params(config), sep="/")
    missing, extra = sorted(set(expected) - set(flat)), sorted(set(flat) - set(expected))
    bad = [k for k in expected if k in flat and tuple(flat[k].shape) != tuple(expected[k].shape)]
    if missing or extra or bad:
        raise ValueError(
            f"{weights_file} does not match its config: missing {missing[:5]}, unexpected {extra[:5]}, "
            f"wrong shapes {bad[:5]}"
        )
    from cosjax.weights.tensors import check_finite

    for key, value in flat.items():
        check_finite(value, key, weights_file)
    params = traverse_util.unflatten_dict({k: jnp.asarray(v) for k, v in flat.items()}, sep="/")
    dit = LoadedDiT(config=config, experts={"dit": params}, boundary=None, dtype=jnp.float32)
    return dit, meta, np.asarray(meta["prompt_embeddings"], np.float32)


def update_meta(path: str | Path, **fields: Any) -> dict:
    """Sets top-level `fields` of a local toy folder's toy.json, atomically; returns the new metadata."""
    meta_file = local_folder(path, "the toy model folder") / TOY_FILE
    meta = json.loads(meta_file.read_text())
    if meta.get("format") != TOY_FORMAT:
        raise ValueError(f"{meta_file} is not a {TOY_FORMAT} export")
    meta.update(fields)
    write_atomic(meta_file, json.dumps(meta))
    return meta
