"""A small streaming safetensors reader: one tensor at a time, with integrity checks.

We read the format ourselves (8-byte little-endian header length, JSON header, raw data) rather than
through torch or `safetensors.numpy`, so that bfloat16 works without torch, a tensor is read with one
`seek` + `read` (no whole-file mapping), and a truncated or corrupt file is reported with its name
before any data is used.
"""

from __future__ import annotations

import dataclasses
import json
import os
import struct
from collections.abc import Mapping
from pathlib import Path

import ml_dtypes
import numpy as np

DTYPES = {
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
_MAX_HEADER = 100 * 2**20
# torch.save writes a zip archive (PyTorch >= 1.6) or a bare pickle (protocol 2+ starts with 0x80)
_TORCH_MAGIC = (b"PK\x03\x04", b"\x80")
TORCH_FIX = (
    "cosjax reads DiT and LoRA weights from safetensors only: save the state dict with "
    "safetensors.torch.save_file(torch.load(PATH, weights_only=True), 'model.safetensors') and give "
    "that file (or its folder) instead"
)


class CheckpointError(ValueError):
    """A checkpoint file or folder is missing, corrupt, truncated or does not fit the model."""


class NonFiniteError(CheckpointError):
    """A tensor holds NaN or inf values."""


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
    xp = np if isinstance(array, np.ndarray) else _jnp()
    if bool(xp.all(xp.isfinite(array))):
        return array
    nan, inf = int(xp.sum(xp.isnan(array))), int(xp.sum(xp.isinf(array)))
    raise NonFiniteError(
        f"{where}: tensor {key!r} holds {nan} NaN and {inf} inf values (of {array.size}){why}; the "
        "checkpoint is damaged: download or convert it again, or pass allow_nonfinite=True "
        "(--allow-nonfinite) to use it as it is"
    )


def _jnp():
    import jax.numpy as jnp

    return jnp


@dataclasses.dataclass(frozen=True)
class TensorEntry:
    """Where one tensor lives: file, byte range (absolute), dtype and shape."""

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


def describe_keys(keys: list[str], files: Mapping[str, object] | None = None, limit: int = 8) -> str:
    """The first `limit` keys for an error message, each with its file when known, and a count of the rest."""
    files = files or {}
    shown = [f"{k!r}" + (f" (in {files[k]})" if k in files else "") for k in keys[:limit]]
    return ", ".join(shown) + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


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
