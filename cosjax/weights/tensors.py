"""Reading stored tensors: safetensors files and folders, `.pth` state dicts, and the one error type.

Every reader gives {key: entry}; an entry (`TensorEntry` for safetensors, `TorchEntry` for a torch
state dict) holds `file`, `dtype` (numpy; bfloat16 as `ml_dtypes.bfloat16`), `shape` (PyTorch order)
and `read()`, so key maps check names, shapes and dtypes before any weight data is read.

Safetensors are parsed here (8-byte little-endian header length, JSON header, raw data) rather than
through torch or `safetensors.numpy`, so that bfloat16 works without torch, a tensor is read with one
`seek` + `read` (no whole-file mapping), and a truncated or corrupt file is reported with its name
before any data is used. `.pth` files are opened with `torch.load(weights_only=True)` (no code is
unpickled), memory-mapped when they are zip archives.

Every failure is a `CheckpointError` (a `ValueError`) naming the file and, where there is one, the
key; `NonFiniteError` is the kind raised for NaN, inf or a float16 overflow.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import struct
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import ml_dtypes
import numpy as np

DTYPES = {  # safetensors dtype names
    "F64": np.dtype(np.float64),
    "F32": np.dtype(np.float32),
    "F16": np.dtype(np.float16),
    "BF16": np.dtype(ml_dtypes.bfloat16),
    "I64": np.dtype(np.int64),
    "I32": np.dtype(np.int32),
    "I16": np.dtype(np.int16),
    "I8": np.dtype(np.int8),
    "U8": np.dtype(np.uint8),
    "BOOL": np.dtype(np.bool_),
}
PARAM_DTYPES = {"float32": np.float32, "bfloat16": ml_dtypes.bfloat16, "float16": np.float16}
_MAX_HEADER = 100 * 2**20
# torch.save writes a zip archive (PyTorch >= 1.6) or a bare pickle (protocol 2+ starts with 0x80)
_TORCH_MAGIC = (b"PK\x03\x04", b"\x80")
TORCH_FIX = (
    "cosjax reads DiT and LoRA weights from safetensors only: save the state dict with "
    "safetensors.torch.save_file(torch.load(PATH, weights_only=True), 'model.safetensors') and give "
    "that file (or its folder) instead"
)
_FLOAT16_MAX = float(np.finfo(np.float16).max)


class CheckpointError(ValueError):
    """A checkpoint file or folder is missing, corrupt, truncated or does not fit the model."""


class NonFiniteError(CheckpointError):
    """A tensor holds NaN or inf values (or would, once cast)."""


class Entry(Protocol):
    """A stored tensor: where it is, its dtype and PyTorch shape, and how to read it."""

    file: Path
    dtype: np.dtype
    shape: tuple[int, ...]

    def read(self) -> np.ndarray: ...


def numpy_dtype(name: str | np.dtype) -> np.dtype:
    """'float32' | 'bfloat16' | 'float16' (or such a dtype) -> numpy dtype; ValueError otherwise."""
    if not isinstance(name, str):
        import jax.numpy as jnp

        name = jnp.dtype(name).name
    if name not in PARAM_DTYPES:
        raise ValueError(f"unsupported parameter dtype {name!r}; use one of {', '.join(PARAM_DTYPES)}")
    return np.dtype(PARAM_DTYPES[name])


def is_float(dtype: np.dtype) -> bool:
    return np.dtype(dtype).kind in "fc" or np.dtype(dtype) == DTYPES["BF16"]


def check_finite(array, key: str, where: object, allow: bool = False, why: str = ""):
    """Returns `array` (numpy or jax, one tensor); raises `NonFiniteError` naming `key` and `where`
    (its file or folder) when a float tensor holds NaN or inf, unless `allow`.

    Every tensor cosjax converts or loads passes through here, one at a time (a bool temporary of the
    tensor's size, never the checkpoint's). `why` adds a cause to the message (e.g. a dtype overflow).
    """
    if allow or not is_float(array.dtype):
        return array
    if isinstance(array, np.ndarray):
        xp = np
    else:
        import jax.numpy as xp
    if bool(xp.all(xp.isfinite(array))):
        return array
    nan, inf = int(xp.sum(xp.isnan(array))), int(xp.sum(xp.isinf(array)))
    raise NonFiniteError(
        f"{where}: tensor {key!r} holds {nan} NaN and {inf} inf values (of {array.size}){why}; the "
        "checkpoint is damaged: download or convert it again, or pass allow_nonfinite=True "
        "(--allow-nonfinite) to use it as it is"
    )


def read_finite(entry: Entry, key: str, dtype: np.dtype, allow_nonfinite: bool = False) -> np.ndarray:
    """One stored tensor (in its own dtype), refused with a `NonFiniteError` naming key and file when
    it holds NaN or inf, or when its cast to `dtype` would overflow (float16 tops out at 65504)."""
    value = check_finite(entry.read(), key, entry.file, allow_nonfinite)
    if np.dtype(dtype) == np.float16 and not allow_nonfinite and value.size:
        peak = max(float(value.max()), -float(value.min()))  # reductions: no temporary of the tensor
        if peak > _FLOAT16_MAX:
            raise NonFiniteError(
                f"{entry.file}: tensor {key!r} holds values up to {peak:.4g}, beyond float16's "
                f"{_FLOAT16_MAX:g}: the cast would make them inf; convert with dtype bfloat16 or float32"
            )
    return value


def describe_keys(keys: list[str], files: Mapping[str, object] | None = None, limit: int = 8) -> str:
    """The first `limit` keys for an error message, each with its file when known, and a count of the rest."""
    files = files or {}
    shown = [f"{k!r}" + (f" (in {files[k]})" if k in files else "") for k in keys[:limit]]
    return ", ".join(shown) + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


def read_json(path: Path) -> dict:
    """A json file's content; {} when it does not exist; CheckpointError when it is corrupt."""
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: corrupt JSON ({e})") from None


# ----------------------------------------------------------------------------------------------
# safetensors


@dataclasses.dataclass(frozen=True)
class TensorEntry:
    """Where one safetensors tensor lives: file, byte range (absolute), dtype and shape."""

    file: Path
    dtype: np.dtype
    shape: tuple[int, ...]
    start: int
    end: int

    def read(self) -> np.ndarray:
        """Reads the tensor into a fresh numpy array."""
        with open(self.file, "rb") as f:
            f.seek(self.start)
            data = f.read(self.end - self.start)
        if len(data) != self.end - self.start:
            raise CheckpointError(f"{self.file}: truncated while reading a tensor")
        return np.frombuffer(data, self.dtype).reshape(self.shape).copy()


def read_header(path: str | os.PathLike) -> dict[str, TensorEntry]:
    """Parses a safetensors header and checks every tensor lies inside the file.

    Raises:
      CheckpointError naming the file when it is missing, its header is corrupt, a dtype is
      unsupported, a byte range is inconsistent with its shape, or the file is truncated.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: file not found")
    size = path.stat().st_size
    with open(path, "rb") as f:
        raw = f.read(8)
        # a torch.save file is told by its magic only once it fails to parse as safetensors (a valid
        # header length may begin with the same byte as a pickle)
        torch_file = raw.startswith(_TORCH_MAGIC)
        if len(raw) < 8:
            raise CheckpointError(f"{path}: not a safetensors file (shorter than its header length)")
        (n,) = struct.unpack("<Q", raw)
        if n > _MAX_HEADER or 8 + n > size:
            raise _not_safetensors(path, torch_file, f"length {n}, file {size} B")
        try:
            header = json.loads(f.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise _not_safetensors(path, torch_file, str(e)) from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: corrupt safetensors header (not a JSON object)")
    header.pop("__metadata__", None)
    entries = {}
    for key, info in header.items():
        try:
            dtype = DTYPES[info["dtype"]]
            shape = tuple(int(s) for s in info["shape"])
            start, end = (int(o) for o in info["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise CheckpointError(f"{path}: corrupt header entry for {key!r}: {info}") from None
        if start < 0 or any(s < 0 for s in shape):
            raise CheckpointError(
                f"{path}: tensor {key!r} has byte range {start}..{end} or shape {shape} with a negative "
                "value: its data_offsets would point into the header (the file is corrupt)"
            )
        if end - start != int(np.prod(shape, dtype=np.int64)) * dtype.itemsize or start > end:
            raise CheckpointError(
                f"{path}: tensor {key!r} has byte range {start}..{end}, which does "
                f"not fit shape {shape} of {info['dtype']}"
            )
        if 8 + n + end > size:
            raise CheckpointError(
                f"{path}: truncated: tensor {key!r} ends at byte {8 + n + end} but the file has {size} bytes"
            )
        entries[key] = TensorEntry(path, dtype, shape, 8 + n + start, 8 + n + end)
    _check_disjoint(path, entries)
    return entries


def _not_safetensors(path: Path, torch_file: bool, detail: str) -> CheckpointError:
    if torch_file:
        return CheckpointError(f"{path}: a PyTorch pickle (torch.save) file, not supported; {TORCH_FIX}")
    return CheckpointError(f"{path}: corrupt safetensors header ({detail})")


def _check_disjoint(path: Path, entries: Mapping[str, TensorEntry]) -> None:
    """No two tensors may share bytes (a corrupt header could alias one tensor's data as another's)."""
    spans = sorted((e.start, e.end, k) for k, e in entries.items() if e.end > e.start)
    for (_, end_a, key_a), (start_b, _, key_b) in zip(spans, spans[1:], strict=False):
        if start_b < end_a:
            raise CheckpointError(
                f"{path}: tensors {key_a!r} and {key_b!r} overlap in the file (bytes {start_b}..{end_a}): "
                "the header is corrupt"
            )


def index_tensors(location: Path) -> dict[str, TensorEntry]:
    """key -> TensorEntry over a safetensors file, or a folder's shards (through its
    `*.safetensors.index.json` when there is one, checked against the shards both ways)."""
    if location.is_file():
        return read_header(location)
    indexes = sorted(location.glob("*.safetensors.index.json"))
    if len(indexes) > 1:
        raise CheckpointError(f"{location}: several safetensors indexes: {[p.name for p in indexes]}")
    if indexes:
        return _read_sharded(location, indexes[0])
    files = sorted(location.glob("*.safetensors"))
    if not files:
        raise CheckpointError(f"{location}: no .safetensors files")
    tensors = {}
    for f in files:
        for key, entry in read_header(f).items():
            if key in tensors:
                raise CheckpointError(f"{f}: key {key!r} is also in {tensors[key].file}")
            tensors[key] = entry
    return tensors


def _read_sharded(location: Path, index: Path) -> dict[str, TensorEntry]:
    weight_map = read_json(index).get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        raise CheckpointError(f"{index}: corrupt index: no weight_map")
    for shard in weight_map.values():
        _check_inside(shard, index)
    headers = {}
    for shard in sorted(set(weight_map.values())):
        if not (location / shard).is_file():
            raise CheckpointError(f"{location / shard}: shard listed in {index.name} is missing")
        headers[shard] = read_header(location / shard)
    tensors = {}
    for key, shard in weight_map.items():
        if key not in headers[shard]:
            raise CheckpointError(
                f"{location / shard}: index {index.name} places {key!r} in this shard, but the shard "
                "does not hold it"
            )
        tensors[key] = headers[shard][key]
    for shard, header in headers.items():
        for key in header.keys() - weight_map.keys():
            raise CheckpointError(
                f"{location / shard}: holds {key!r}, which the index {index.name} does not list"
            )
    return tensors


def _check_inside(shard: object, index: Path) -> None:
    """An index entry must name a file inside the model folder: a relative path without '..'.

    Checked on the name, not the resolved path, so symlinked shards (the Hugging Face cache links
    every file to a blob elsewhere) stay loadable.
    """
    parts = Path(shard).parts if isinstance(shard, str) and shard else ("..",)
    if not isinstance(shard, str) or Path(shard).is_absolute() or ".." in parts:
        raise CheckpointError(
            f"{index}: weight_map entry {shard!r} does not name a file inside {index.parent} (an index may "
            "only list shards in its own folder, by relative name)"
        )


# ----------------------------------------------------------------------------------------------
# torch state dicts (.pth)


@dataclasses.dataclass(frozen=True)
class TorchEntry:
    """One tensor of a torch state dict (memory-mapped, in memory, or on the `meta` device: never read)."""

    file: Path
    dtype: np.dtype
    shape: tuple[int, ...]
    tensor: Any

    def read(self) -> np.ndarray:
        """The tensor as a numpy array in its PyTorch layout and stored dtype (bfloat16 as
        `ml_dtypes.bfloat16`, its bits reinterpreted)."""
        import torch

        t = self.tensor.detach().contiguous()
        if t.dtype == torch.bfloat16:  # numpy has no bfloat16: reinterpret the bits
            return t.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
        return t.numpy()


def _torch_to_numpy_dtype(torch_dtype) -> np.dtype | None:
    import torch

    if torch_dtype == torch.bfloat16:
        return np.dtype(ml_dtypes.bfloat16)
    try:
        return torch.empty(0, dtype=torch_dtype).numpy().dtype
    except (TypeError, RuntimeError):
        return None


def torch_entries(state: Mapping[str, Any], file: str | os.PathLike) -> dict[str, TorchEntry]:
    """Wraps a torch state dict {key: tensor} (any device, `meta` included) as entries.

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
        dtype = _torch_to_numpy_dtype(t.dtype)
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
