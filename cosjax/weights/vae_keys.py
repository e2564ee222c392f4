"""The VAE key maps (our parameter tree <-> Diffusers / official Wan keys) and the VAE loaders.

Diffusers layout (`AutoencoderKLWan`, safetensors). Our tree mirrors the Diffusers module names, with
list indices folded into the name (`encoder.down_blocks.3.resample.1.weight` <->
('encoder', 'down_blocks_3', 'resample_1', 'kernel')), so the map is a rule rather than a table:
  - conv `weight` [O, I, *k] <-> `kernel` [*k, I, O];
  - RMSNorm `gamma` [C, 1, 1, 1] (attention: [C, 1, 1]) <-> `scale` [C];
  - `bias` unchanged.

Official layout (`Wan2.1_VAE.pth`, `Wan2.2_VAE.pth`: a plain torch state dict of the `WanVAE_` modules
in `wan/modules/vae2_1.py` / `vae2_2.py`). Same tensors and leaf rule, other module names
(`official_key`):
  - top level: `quant_conv` <-> `conv1`, `post_quant_conv` <-> `conv2`;
  - encoder / decoder ends: `conv_in` <-> `conv1`, `norm_out` <-> `head.0`, `conv_out` <-> `head.2`;
  - middle: `mid_block.resnets.0` / `attentions.0` / `resnets.1` <-> `middle.0` / `middle.1` / `middle.2`;
  - residual block: `norm1`, `conv1`, `norm2`, `conv2`, `conv_shortcut` <-> `residual.0`,
    `residual.2`, `residual.3`, `residual.6`, `shortcut`;
  - Wan2.1 (flat Sequentials): `encoder.down_blocks.n` <-> `encoder.downsamples.n` (same n);
    decoder level i with R = num_res_blocks: `up_blocks.i.resnets.j` <-> `upsamples.{i(R+2)+j}`,
    `up_blocks.i.upsamplers.0` <-> `upsamples.{i(R+2)+R+1}`;
  - Wan2.2 (one block per level): `down_blocks.i.resnets.j` <-> `downsamples.i.downsamples.j`,
    `down_blocks.i.downsampler` <-> `downsamples.i.downsamples.R`, `up_blocks.i.resnets.j` <->
    `upsamples.i.upsamples.j`, `up_blocks.i.upsampler` <-> `upsamples.i.upsamples.{R+1}`.
The official files carry no config; `official_config` tells Wan2.1 (z_dim 16) from Wan2.2 (z_dim 48).

In both layouts the expected keys and shapes come from the model itself (`abstract_params`), so a
checkpoint that does not fit the config is rejected before any tensor data is used.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, Protocol

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np

from cosjax.models.vae import VAEConfig, abstract_params
from cosjax.paths import require_local, user_path
from cosjax.weights.safetensors_io import CheckpointError, TensorEntry, describe_keys, read_header

Path_ = tuple[str, ...]
Layout = Literal["diffusers", "official"]
WEIGHTS_FILE = "diffusion_pytorch_model.safetensors"
INDEX_FILE = WEIGHTS_FILE + ".index.json"
OFFICIAL_SUFFIXES = (".pth", ".pt")
CONVERTED_FILE = "cosjax_vae.json"  # marks a VAE folder written by `cosjax convert`
_LEAF_NAMES = {"kernel": "weight", "scale": "gamma", "bias": "bias"}

# The official checkpoints carry no config. Wan2.1: Diffusers `AutoencoderKLWan()` defaults (= our
# VAEConfig defaults). Wan2.2: `vae22_diffusers_config` of Diffusers' `convert_wan_to_diffusers.py`, whose
# latent statistics are those hard-coded in the official `Wan2_2_VAE.__init__` (vae2_2.py).
WAN22_LATENTS_MEAN = (
    -0.2289, -0.0052, -0.1323, -0.2339, -0.2799, 0.0174, 0.1838, 0.1557,
    -0.1382, 0.0542, 0.2813, 0.0891, 0.1570, -0.0098, 0.0375, -0.1825,
    -0.2246, -0.1207, -0.0698, 0.5109, 0.2665, -0.2108, -0.2158, 0.2502,
    -0.2055, -0.0322, 0.1109, 0.1567, -0.0729, 0.0899, -0.2799, -0.1230,
    -0.0313, -0.1649, 0.0117, 0.0723, -0.2839, -0.2083, -0.0520, 0.3748,
    0.0152, 0.1957, 0.1433, -0.2944, 0.3573, -0.0548, -0.1681, -0.0667,
)  # fmt: skip
WAN22_LATENTS_STD = (
    0.4765, 1.0364, 0.4514, 1.1677, 0.5313, 0.4990, 0.4818, 0.5013,
    0.8158, 1.0344, 0.5894, 1.0901, 0.6885, 0.6165, 0.8454, 0.4978,
    0.5759, 0.3523, 0.7135, 0.6804, 0.5833, 1.4146, 0.8986, 0.5659,
    0.7069, 0.5338, 0.4889, 0.4917, 0.4069, 0.4999, 0.6866, 0.4093,
    0.5709, 0.6065, 0.6415, 0.4944, 0.5726, 1.2042, 0.5458, 1.6887,
    0.3971, 1.0600, 0.3943, 0.5537, 0.5444, 0.4089, 0.7468, 0.7744,
)  # fmt: skip
WAN21_VAE = VAEConfig()
WAN22_VAE = VAEConfig(
    base_dim=160,
    decoder_base_dim=256,
    z_dim=48,
    is_residual=True,
    in_channels=12,
    out_channels=12,
    patch_size=2,
    scale_factor_temporal=4,
    scale_factor_spatial=16,
    latents_mean=WAN22_LATENTS_MEAN,
    latents_std=WAN22_LATENTS_STD,
)
OFFICIAL_CONFIGS = {16: WAN21_VAE, 48: WAN22_VAE}  # by z_dim


class Entry(Protocol):
    """What the key check needs of a stored tensor (`TensorEntry`, `TorchEntry`)."""

    file: Path
    dtype: np.dtype
    shape: tuple[int, ...]

    def read(self) -> np.ndarray: ...


def diffusers_key(path: Path_) -> str:
    """Our leaf path -> its Diffusers key.

    ('decoder', 'up_blocks_0', 'upsamplers_0', 'time_conv', 'kernel')
    -> 'decoder.up_blocks.0.upsamplers.0.time_conv.weight'.
    """
    *modules, leaf = path
    return ".".join([re.sub(r"_(\d+)$", r".\1", m) for m in modules] + [_LEAF_NAMES[leaf]])


_RESNET_PARTS = {
    "norm1": "residual.0",
    "conv1": "residual.2",
    "norm2": "residual.3",
    "conv2": "residual.6",
    "conv_shortcut": "shortcut",
}
_END_PARTS = {"conv_in": "conv1", "norm_out": "head.0", "conv_out": "head.2"}
_MID_PARTS = {"resnets_0": "middle.0", "attentions_0": "middle.1", "resnets_1": "middle.2"}
_TOP_PARTS = {"quant_conv": "conv1", "post_quant_conv": "conv2"}


def _index(name: str) -> int:
    return int(name.rsplit("_", 1)[1])


def official_key(path: Path_, config: VAEConfig) -> str:
    """Our leaf path -> its key in the official `Wan2.x_VAE.pth` state dict (rules in the module doc).

    Wan2.1 (num_res_blocks 2): ('decoder', 'up_blocks_1', 'upsamplers_0', 'time_conv', 'kernel')
    -> 'decoder.upsamples.7.time_conv.weight'; Wan2.2: ('encoder', 'down_blocks_1', 'downsampler',
    'resample_1', 'bias') -> 'encoder.downsamples.1.downsamples.2.resample.1.bias'.
    """
    *modules, leaf = path
    r = config.num_res_blocks
    if len(modules) == 1:
        return f"{_TOP_PARTS[modules[0]]}.{_LEAF_NAMES[leaf]}"
    side, block, *rest = modules
    if block in _END_PARTS:
        out = [side, _END_PARTS[block]]
    elif block == "mid_block":
        out = [side, _MID_PARTS[rest.pop(0)]]
    elif block.startswith("down_blocks_") and not config.is_residual:
        out = [side, f"downsamples.{_index(block)}"]
    elif block.startswith("down_blocks_"):
        sub = rest.pop(0)
        j = r if sub == "downsampler" else _index(sub)
        out = [side, f"downsamples.{_index(block)}.downsamples.{j}"]
    elif block.startswith("up_blocks_"):
        i, sub = _index(block), rest.pop(0)
        j = r + 1 if sub in ("upsampler", "upsamplers_0") else _index(sub)
        out = [side, f"upsamples.{i}.upsamples.{j}" if config.is_residual else f"upsamples.{i * (r + 2) + j}"]
    else:
        raise KeyError(f"no official name for {path}")
    out += [_RESNET_PARTS.get(m, re.sub(r"_(\d+)$", r".\1", m)) for m in rest]
    return ".".join(out + [_LEAF_NAMES[leaf]])


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


def expected_keys(
    config: VAEConfig, layout: Layout = "diffusers"
) -> dict[str, tuple[Path_, tuple[int, ...]]]:
    """{checkpoint key in `layout`: (our leaf path, our leaf shape)} for every parameter `config` needs."""
    flat = jax.tree_util.tree_flatten_with_path(abstract_params(config))[0]
    out = {}
    for keys, leaf in flat:
        path = tuple(k.key for k in keys)
        key = diffusers_key(path) if layout == "diffusers" else official_key(path, config)
        out[key] = (path, tuple(leaf.shape))
    return out


def check_keys(
    config: VAEConfig, entries: Mapping[str, Entry], where: object, layout: Layout = "diffusers"
) -> None:
    """Checks names, shapes and dtypes of a checkpoint's tensors against `config`.

    Args:
      entries: {key: entry with .file, .dtype (numpy) and .shape (PyTorch order)}.
      where: the checkpoint, for messages.
      layout: the key names expected, "diffusers" or "official".

    Raises:
      CheckpointError naming the missing, unexpected, mis-shaped or non-float keys (and their files).
    """
    expected = expected_keys(config, layout)

    def listing(keys):
        return describe_keys(keys, {k: e.file for k, e in entries.items()})

    missing = [k for k in expected if k not in entries]
    if missing:
        raise CheckpointError(
            f"{where}: {len(missing)} {layout}-layout VAE key(s) missing for this config: {listing(missing)}"
        )
    unexpected = [k for k in entries if k not in expected]
    if unexpected:
        raise CheckpointError(
            f"{where}: unexpected {layout}-layout VAE key(s) for this config: {listing(unexpected)}"
        )
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


def load_vae_diffusers(
    folder_or_file: str | os.PathLike, config: VAEConfig | None = None, allow_nonfinite: bool = False
):
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
        leaf = to_leaf(path, _read_finite(entries[key], key, allow_nonfinite)).astype(np.float32)
        _nest(params, path, jnp.asarray(leaf))
    return config, params


# ----------------------------------------------------------------------------------------------
# Official `.pth` checkpoints.


@dataclasses.dataclass(frozen=True)
class TorchEntry:
    """One tensor of a torch state dict (possibly memory-mapped, or on the `meta` device: never read)."""

    file: Path
    dtype: np.dtype
    shape: tuple[int, ...]
    tensor: Any

    def read(self) -> np.ndarray:
        """The tensor as a numpy array in its PyTorch layout (bfloat16 / float16 widened to float32)."""
        import torch

        t = self.tensor.detach()
        if t.dtype in (torch.bfloat16, torch.float16):
            t = t.to(torch.float32)
        return t.numpy()


def _numpy_dtype(torch_dtype) -> np.dtype | None:
    import torch

    if torch_dtype == torch.bfloat16:
        return np.dtype(ml_dtypes.bfloat16)
    try:
        return torch.empty(0, dtype=torch_dtype).numpy().dtype
    except (TypeError, RuntimeError):
        return None


def torch_entries(state: Mapping[str, Any], file: str | os.PathLike) -> dict[str, TorchEntry]:
    """Wraps a torch state dict {key: tensor} (any device, `meta` included) for `check_keys`.

    Raises:
      CheckpointError naming `file` when `state` is not a {str: tensor} mapping or holds a tensor whose
      dtype has no numpy counterpart.
    """
    import torch

    file = Path(file)
    if not isinstance(state, Mapping):
        raise CheckpointError(f"{file}: not a state dict (the file holds a {type(state).__name__})")
    out = {}
    for key, t in state.items():
        if not isinstance(key, str) or not isinstance(t, torch.Tensor):
            raise CheckpointError(
                f"{file}: not a plain state dict: entry {key!r} holds a {type(t).__name__}, not a tensor"
            )
        dtype = _numpy_dtype(t.dtype)
        if dtype is None:
            raise CheckpointError(f"{file}: tensor {key!r} has unsupported dtype {t.dtype}")
        out[key] = TorchEntry(file, dtype, tuple(t.shape), t)
    return out


def read_torch_state(path: str | os.PathLike) -> dict[str, TorchEntry]:
    """Opens a `.pth` state dict without unpickling code (`weights_only`), memory-mapped when possible.

    Zip-format files (`torch.save`'s default) are memory-mapped, so a tensor's bytes are only read
    when it is converted; legacy (pre-1.6, non-zip) files cannot be mapped and are read whole.

    Raises:
      CheckpointError naming the file when it is missing, corrupt, truncated, not loadable with
      `weights_only=True`, or not a plain {str: tensor} state dict.
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: file not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except Exception as e:  # torch raises RuntimeError, UnpicklingError, EOFError, ... on bad files
        raise CheckpointError(f"{path}: not a readable torch state dict ({_load_error(e)})") from e
    return torch_entries(state, path)


def _load_error(e: Exception) -> str:
    """The gist of a `torch.load` exception: its type and first sentence (the unpickler's own reason
    rather than torch's advice to retry with weights_only=False)."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(e))
    marker = "WeightsUnpickler error:"
    if marker in text:
        text = "weights-only unpickler: " + text.split(marker, 1)[1].strip().split("\n\n")[0]
    text = " ".join(text.split()).split(". ")[0]
    return f"{type(e).__name__}: {text[:200]}" if text else type(e).__name__


def official_config(entries: Mapping[str, Entry], where: object) -> VAEConfig:
    """The config of an official Wan VAE checkpoint, told by its latent width.

    The width is read from `conv2.weight` (the post-quant conv, [z, z, 1, 1, 1]).

    Raises:
      CheckpointError when `conv2.weight` is absent or its z_dim is neither 16 (Wan2.1) nor 48 (Wan2.2).
    """
    entry = entries.get("conv2.weight")
    if entry is None:
        raise CheckpointError(
            f"{where}: no 'conv2.weight' tensor, so not an official Wan VAE state dict "
            "(pass config= to load it anyway)"
        )
    z_dim = entry.shape[0] if entry.shape else None
    if z_dim not in OFFICIAL_CONFIGS:
        raise CheckpointError(
            f"{where}: 'conv2.weight' has shape {entry.shape}: z_dim {z_dim} is neither 16 (Wan2.1) nor "
            "48 (Wan2.2); pass config= to load it"
        )
    return OFFICIAL_CONFIGS[z_dim]


def load_vae_official(
    path: str | os.PathLike, config: VAEConfig | None = None, allow_nonfinite: bool = False
):
    """Loads an official Wan VAE checkpoint (`Wan2.1_VAE.pth`, `Wan2.2_VAE.pth`) into our float32 tree.

    Args:
      path: the `.pth` file, a plain torch state dict with the official key names.
      config: the architecture; None picks WAN21_VAE or WAN22_VAE from the latent width.

    Returns:
      (config, params): params is a nested dict of float32 jax arrays for `cosjax.models.vae`, equal
      to what `load_vae_diffusers` gives for the same weights in the Diffusers layout.

    Raises:
      CheckpointError naming the file and key for a missing, corrupt or non-state-dict file, an
      unknown z_dim, and missing, unexpected, mis-shaped or non-float tensors.
    """
    entries = read_torch_state(path)
    config = config or official_config(entries, path)
    check_keys(config, entries, path, layout="official")
    params: dict = {}
    for key, (leaf_path, _) in expected_keys(config, "official").items():
        leaf = to_leaf(leaf_path, _read_finite(entries[key], key, allow_nonfinite)).astype(np.float32)
        _nest(params, leaf_path, jnp.asarray(leaf))
    return config, params


def _official_file(path: Path) -> Path | None:
    """The official checkpoint `path` names: itself if a `.pth` file, or the single `*VAE.pth` in a
    folder that holds no Diffusers VAE weights; None otherwise."""
    if path.suffix in OFFICIAL_SUFFIXES:
        return path
    diffusers = [path / "vae", path / WEIGHTS_FILE, path / INDEX_FILE]
    if not path.is_dir() or any(p.exists() for p in diffusers):
        return None
    found = sorted(path.glob("*VAE.pth"))
    return found[0] if len(found) == 1 else None


def _read_finite(entry, key: str, allow_nonfinite: bool) -> np.ndarray:
    from cosjax.weights.convert import read_finite

    return read_finite(entry, key, np.dtype(np.float32), allow_nonfinite)


def load_vae(path: str | os.PathLike, config: VAEConfig | None = None, allow_nonfinite: bool = False):
    """Loads a Wan VAE in either layout, told by the path.

    Args:
      path: a folder written by `cosjax convert` (its `vae/`, or the pipeline folder holding it) ->
        `cosjax.weights.convert.load_converted_vae`; an official `.pth` / `.pt` file (or a folder holding
        exactly one `*VAE.pth` and no Diffusers VAE weights, e.g. an official Wan2.2-TI2V-5B download)
        -> `load_vae_official`; anything else (a Diffusers pipeline / VAE folder or `.safetensors` file)
        -> `load_vae_diffusers`.
      config: passed on; None means the loader's own choice.
      allow_nonfinite: keep tensors holding NaN or inf (by default a `NonFiniteError` naming the key
        and file of the first one).

    Returns:
      (config, params) as the loaders return them.

    Raises:
      CheckpointError as the chosen loader does.
    """
    path = user_path(path)
    converted = converted_folder(path)
    if converted is not None:
        from cosjax.weights.convert import load_converted_vae

        return load_converted_vae(converted, config, allow_nonfinite)
    path = require_local(path, "a PyTorch VAE (memory-mapped)", "load a converted folder, or copy it locally")
    official = _official_file(path)
    if official is not None:
        return load_vae_official(official, config, allow_nonfinite)
    return load_vae_diffusers(path, config, allow_nonfinite)


def converted_folder(path: str | os.PathLike) -> Path | None:
    """The folder written by `cosjax convert` that `path` names (itself, or a converted pipeline
    folder's `vae/`), told by its `cosjax_vae.json`; None when `path` is no such folder."""
    path = user_path(path)
    for folder in (path, path / "vae"):
        if (folder / CONVERTED_FILE).is_file():
            return folder
    return None


def open_vae(path: str | os.PathLike, config: VAEConfig | None = None) -> tuple[VAEConfig, Layout, dict]:
    """Indexes and checks a Wan VAE in either layout, without converting any tensor.

    Safetensors are read as headers only; an official `.pth` is memory-mapped (see `read_torch_state`).

    Args:
      path: as for `load_vae` (an official `.pth` or folder holding one, or the Diffusers layout).
      config: the architecture; None reads config.json (Diffusers) or tells it by z_dim (official).

    Returns:
      (config, layout, {key: entry}) with every key, shape and dtype checked by `check_keys`.

    Raises:
      CheckpointError as the loaders do.
    """
    path = Path(path)
    official = _official_file(path)
    if official is not None:
        entries: dict = read_torch_state(official)
        config = config or official_config(entries, official)
        check_keys(config, entries, official, layout="official")
        return config, "official", entries
    folder, files = _find_files(path)
    config = config or _read_config(folder)
    entries = {}
    for file in files:
        entries.update(read_header(file))
    check_keys(config, entries, path)
    return config, "diffusers", entries
