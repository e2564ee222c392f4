"""The VAE key map (our parameter tree <-> Diffusers `AutoencoderKLWan` keys) and the VAE loader.

Our tree mirrors the Diffusers module names, with list indices folded into the name
(`encoder.down_blocks.3.resample.1.weight` <-> ('encoder', 'down_blocks_3', 'resample_1', 'kernel')),
so the map is a rule rather than a table:
  - conv `weight` [O, I, *k] <-> `kernel` [*k, I, O];
  - RMSNorm `gamma` [C, 1, 1, 1] (attention: [C, 1, 1]) <-> `scale` [C];
  - `bias` unchanged.
The expected keys and shapes come from the model itself (`abstract_params`), so a checkpoint that
does not fit the config is rejected before any tensor data is read.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np

from cosjax.models.vae import VAEConfig, abstract_params
from cosjax.weights.safetensors_io import CheckpointError, TensorEntry, read_header

Path_ = tuple[str, ...]
WEIGHTS_FILE = "diffusion_pytorch_model.safetensors"
INDEX_FILE = WEIGHTS_FILE + ".index.json"
_LEAF_NAMES = {"kernel": "weight", "scale": "gamma", "bias": "bias"}


def diffusers_key(path: Path_) -> str:
    """Our leaf path -> its Diffusers key.

    ('decoder', 'up_blocks_0', 'upsamplers_0', 'time_conv', 'kernel')
    -> 'decoder.up_blocks.0.upsamplers.0.time_conv.weight'.
    """
    *modules, leaf = path
    return ".".join([re.sub(r"_(\d+)$", r".\1", m) for m in modules] + [_LEAF_NAMES[leaf]])


def torch_shape(path: Path_, shape: tuple[int, ...]) -> tuple[int, ...]:
    """The PyTorch shape of the tensor that becomes our leaf of `shape`."""
    leaf = path[-1]
    if leaf == "kernel":
        return (shape[-1], shape[-2], *shape[:-2])
    if leaf == "scale":
        image_norm = any(m.startswith("attentions_") for m in path)
        return (shape[0], 1, 1) if image_norm else (shape[0], 1, 1, 1)
    return tuple(shape)


def to_leaf(path: Path_, array: np.ndarray) -> np.ndarray:
    """A PyTorch tensor (numpy) -> our leaf: conv weights transposed, norm gammas flattened."""
    if path[-1] == "kernel":
        return np.transpose(array, (*range(2, array.ndim), 1, 0))
    if path[-1] == "scale":
        return array.reshape(-1)
    return array


def expected_keys(config: VAEConfig) -> dict[str, tuple[Path_, tuple[int, ...]]]:
    """{Diffusers key: (our leaf path, our leaf shape)} for every parameter `config` needs."""
    flat = jax.tree_util.tree_flatten_with_path(abstract_params(config))[0]
    out = {}
    for keys, leaf in flat:
        path = tuple(k.key for k in keys)
        out[diffusers_key(path)] = (path, tuple(leaf.shape))
    return out


def check_keys(config: VAEConfig, entries: Mapping[str, TensorEntry], where: object) -> None:
    """Checks names, shapes and dtypes of a checkpoint's tensors against `config`.

    Raises:
      CheckpointError naming the missing, unexpected, mis-shaped or non-float keys (and their files).
    """
    expected = expected_keys(config)

    def listing(keys):
        shown = [f"{k!r}" + (f" (in {entries[k].file})" if k in entries else "") for k in keys[:8]]
        return ", ".join(shown) + (f" and {len(keys) - 8} more" if len(keys) > 8 else "")

    missing = [k for k in expected if k not in entries]
    if missing:
        raise CheckpointError(
            f"{where}: {len(missing)} VAE key(s) missing for this config: {listing(missing)}"
        )
    unexpected = [k for k in entries if k not in expected]
    if unexpected:
        raise CheckpointError(f"{where}: unexpected VAE key(s) for this config: {listing(unexpected)}")
    for key, (path, shape) in expected.items():
        entry, want = entries[key], torch_shape(path, shape)
        if entry.shape != want:
            raise CheckpointError(f"{entry.file}: tensor {key!r} has shape {entry.shape}, expected {want}")
        if entry.dtype.kind != "f" and entry.dtype != ml_dtypes.bfloat16:
            raise CheckpointError(f"{entry.file}: tensor {key!r} has dtype {entry.dtype}, not float")


def _find_files(folder_or_file: Path) -> tuple[Path, list[Path]]:
    """-> (the folder holding config.json, the safetensors files)."""
    if folder_or_file.is_file():
        return folder_or_file.parent, [folder_or_file]
    if not folder_or_file.is_dir():
        raise CheckpointError(f"{folder_or_file}: no such file or folder")
    folder = folder_or_file / "vae" if (folder_or_file / "vae").is_dir() else folder_or_file
    if (folder / WEIGHTS_FILE).is_file():
        return folder, [folder / WEIGHTS_FILE]
    if (folder / INDEX_FILE).is_file():
        try:
            weight_map = json.loads((folder / INDEX_FILE).read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise CheckpointError(f"{folder / INDEX_FILE}: corrupt index ({e})") from None
        return folder, [folder / name for name in sorted(set(weight_map.values()))]
    raise CheckpointError(f"{folder}: neither {WEIGHTS_FILE} nor {INDEX_FILE} found")


def _read_config(folder: Path) -> VAEConfig:
    path = folder / "config.json"
    if not path.is_file():
        raise CheckpointError(f"{path}: not found (pass config= to load weights without one)")
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: corrupt JSON ({e})") from None
    if raw.get("_class_name", "AutoencoderKLWan") != "AutoencoderKLWan":
        raise CheckpointError(f"{path}: describes a {raw['_class_name']}, not an AutoencoderKLWan")
    try:
        return VAEConfig.from_diffusers(raw)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: unsupported VAE config ({e})") from None


def _nest(tree: dict, path: Path_, value) -> None:
    for name in path[:-1]:
        tree = tree.setdefault(name, {})
    tree[path[-1]] = value


def load_vae_diffusers(folder_or_file: str | os.PathLike, config: VAEConfig | None = None):
    """Loads a Diffusers-layout Wan VAE into our float32 parameter tree.

    Args:
      folder_or_file: a Diffusers pipeline folder (with `vae/`), the VAE folder itself (config.json +
        diffusion_pytorch_model.safetensors or a sharded index), or the .safetensors file.
      config: the architecture; None reads it from config.json next to the weights.

    Returns:
      (config, params): params is a nested dict of float32 jax arrays for `cosjax.models.vae`.

    Raises:
      CheckpointError naming the file and key for missing, unexpected, mis-shaped, non-float or
      truncated tensors, or a missing / unsupported config.
    """
    folder, files = _find_files(Path(folder_or_file))
    config = config or _read_config(folder)
    entries: dict[str, TensorEntry] = {}
    for file in files:
        entries.update(read_header(file))
    check_keys(config, entries, folder_or_file)
    params: dict = {}
    for key, (path, _) in expected_keys(config).items():
        leaf = to_leaf(path, entries[key].read()).astype(np.float32)
        _nest(params, path, jnp.asarray(leaf))
    return config, params
