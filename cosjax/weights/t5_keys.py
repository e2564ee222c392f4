"""Loading umT5 encoder weights into `cosjax.models.t5`'s stacked parameter tree.

Two sources (`wan22.md` section 7):
  * the Diffusers / transformers `text_encoder/` folder: `config.json` + `model*.safetensors`
    (sharded with `model.safetensors.index.json`), `UMT5EncoderModel` key names ("hf" layout);
  * the official `models_t5_umt5-xxl-enc-bf16.pth` (a torch state dict, "official" layout),
    memory-mapped so that only the tensor being copied is paged in.

Every key is checked before any weight data is read: missing, unexpected and mis-shaped tensors
raise a `CheckpointError` naming the key and the file. Leaves are then built one at a time (all
layers of one stacked leaf filled into one array), so the host holds at most one leaf besides what
`place` keeps.

A folder written by `cosjax convert` (an Orbax checkpoint plus `cosjax_t5.json`) is restored by
`load_t5` as well.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Literal, Protocol

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np

from cosjax.models.t5 import UMT5_XXL, T5Config, abstract_params
from cosjax.paths import user_path
from cosjax.weights.safetensors_io import CheckpointError, describe_keys
from cosjax.weights.sources import index_tensors

Layout = Literal["official", "hf"]
_DTYPES = (np.dtype(np.float32), np.dtype(ml_dtypes.bfloat16), np.dtype(np.float16))
_TORCH_SUFFIXES = (".pth", ".pt", ".bin")
CONVERTED_FILE = "cosjax_t5.json"  # marks a text-encoder folder written by `cosjax convert`


@dataclasses.dataclass(frozen=True)
class T5KeySpec:
    """One leaf of our tree and its PyTorch names.

    Attributes:
      path: path of the leaf in our parameter tree.
      official: key in the official `T5Encoder` state dict (`{i}` = layer index).
      hf: accepted keys in `UMT5EncoderModel`'s state dict, preferred first (the token embedding is
        tied: `shared.weight` and/or `encoder.embed_tokens.weight`).
      linear: a torch Linear weight [out, in], transposed to our kernel [in, out].
      stacked: the leaf has a leading layer axis filled from `{i}` = 0..num_layers-1.
    """

    path: tuple[str, ...]
    official: str
    hf: tuple[str, ...]
    linear: bool
    stacked: bool

    def keys(self, layout: Layout, layer: int | None = None) -> tuple[str, ...]:
        names = (self.official,) if layout == "official" else self.hf
        return tuple(n.format(i=layer) for n in names)


def _block(ours: str, official: str, hf: str, linear: bool) -> T5KeySpec:
    return T5KeySpec(
        ("blocks", ours),
        f"blocks.{{i}}.{official}.weight",
        (f"encoder.block.{{i}}.layer.{hf}.weight",),
        linear,
        True,
    )


KEY_SPECS: tuple[T5KeySpec, ...] = (
    T5KeySpec(
        ("token_embedding",),
        "token_embedding.weight",
        ("shared.weight", "encoder.embed_tokens.weight"),
        False,
        False,
    ),
    _block("norm1", "norm1", "0.layer_norm", False),
    _block("q", "attn.q", "0.SelfAttention.q", True),
    _block("k", "attn.k", "0.SelfAttention.k", True),
    _block("v", "attn.v", "0.SelfAttention.v", True),
    _block("o", "attn.o", "0.SelfAttention.o", True),
    _block("rel_bias", "pos_embedding.embedding", "0.SelfAttention.relative_attention_bias", False),
    _block("norm2", "norm2", "1.layer_norm", False),
    _block("gate", "ffn.gate.0", "1.DenseReluDense.wi_0", True),  # the GELU branch
    _block("fc1", "ffn.fc1", "1.DenseReluDense.wi_1", True),  # the linear branch
    _block("fc2", "ffn.fc2", "1.DenseReluDense.wo", True),
    T5KeySpec(("norm",), "norm.weight", ("encoder.final_layer_norm.weight",), False, False),
)


class Entry(Protocol):
    """A tensor on disk: `TensorEntry` (safetensors) or `_TorchEntry` (a memory-mapped .pth)."""

    file: Path
    shape: tuple[int, ...]
    dtype: np.dtype

    def read(self) -> np.ndarray: ...


class _TorchEntry:
    """One tensor of a memory-mapped torch state dict, read as a numpy view of the mapping."""

    def __init__(self, tensor, file: Path):
        import torch

        self.tensor, self.file, self.shape = tensor, file, tuple(tensor.shape)
        if tensor.dtype == torch.bfloat16:
            self.dtype = np.dtype(ml_dtypes.bfloat16)
        else:
            try:
                self.dtype = torch.empty(0, dtype=tensor.dtype).numpy().dtype
            except TypeError:  # no numpy equivalent (e.g. float8): reported as not loadable
                self.dtype = np.dtype(np.void)

    def read(self) -> np.ndarray:
        import torch

        t = self.tensor.contiguous()
        if t.dtype == torch.bfloat16:  # numpy has no bfloat16: reinterpret the bits
            return t.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
        return t.numpy()


def leaf_shapes(config: T5Config) -> dict[tuple[str, ...], tuple[int, ...]]:
    """Our parameter tree's leaves as {path: shape}, from `jax.eval_shape` (nothing allocated)."""
    flat = jax.tree_util.tree_flatten_with_path(abstract_params(config))[0]
    return {tuple(k.key for k in path): tuple(leaf.shape) for path, leaf in flat}


def torch_shape(spec: T5KeySpec, leaf_shape: tuple[int, ...]) -> tuple[int, ...]:
    """The PyTorch tensor shape (one layer) that becomes our leaf of shape `leaf_shape`."""
    shape = tuple(leaf_shape[1:] if spec.stacked else leaf_shape)
    return shape[::-1] if spec.linear else shape


def _layers(spec: T5KeySpec, config: T5Config) -> list[int | None]:
    return list(range(config.num_layers)) if spec.stacked else [None]


def expected_keys(config: T5Config, layout: Layout) -> list[tuple[T5KeySpec, list[tuple[str, ...]]]]:
    """For each spec, the accepted names of its tensor per layer (one entry for unstacked leaves)."""
    return [(spec, [spec.keys(layout, i) for i in _layers(spec, config)]) for spec in KEY_SPECS]


def check_keys(
    config: T5Config,
    layout: Layout,
    shapes: Mapping[str, tuple[int, ...]],
    files: Mapping[str, object] | None = None,
    where: object = "checkpoint",
) -> list[tuple[T5KeySpec, list[str]]]:
    """Checks a checkpoint's keys and shapes against `config`, before any data is read.

    Args:
      config: the architecture the weights must fit.
      layout: "official" or "hf" key names.
      shapes: key -> PyTorch tensor shape, as found in the checkpoint.
      files: key -> the file holding it (named in errors).
      where: the checkpoint location, named in errors about missing keys.

    Returns:
      For each spec, the key to read per layer (one key for an unstacked leaf).

    Raises:
      CheckpointError naming the keys (and files) that are missing, unexpected or mis-shaped.
    """
    files = files or {}
    leaves = leaf_shapes(config)
    covered = {spec.path for spec in KEY_SPECS}
    if covered != set(leaves):  # the key map and the model disagree: our bug, not the file's
        raise RuntimeError(f"T5 key map and model disagree: {sorted(covered ^ set(leaves))}")
    expected = expected_keys(config, layout)
    missing = [
        " or ".join(names)
        for _, per_layer in expected
        for names in per_layer
        if not shapes.keys() & set(names)
    ]
    if missing:
        raise CheckpointError(
            f"{where}: {len(missing)} key(s) missing for the {layout} layout of {config}: "
            f"{describe_keys(missing, {})}"
        )
    known = {name for _, per_layer in expected for names in per_layer for name in names}
    unexpected = [k for k in shapes if k not in known]
    if unexpected:
        raise CheckpointError(
            f"{where}: unexpected key(s) for the {layout} layout with {config.num_layers} layers: "
            f"{describe_keys(unexpected, files)}"
        )
    for spec, per_layer in expected:
        want = torch_shape(spec, leaves[spec.path])
        for key in (name for names in per_layer for name in names if name in shapes):
            if tuple(shapes[key]) != want:
                raise CheckpointError(
                    f"{files.get(key, where)}: tensor {key!r} has shape {tuple(shapes[key])}, "
                    f"expected {want} for {config}"
                )
    return [
        (spec, [next(n for n in names if n in shapes) for names in per_layer]) for spec, per_layer in expected
    ]


def detect_layout(keys: Iterable[str], where: object) -> Layout:
    """The naming most keys follow: "official" or "hf"."""
    keys = list(keys)
    official = sum(k.startswith("blocks.") or k in ("token_embedding.weight", "norm.weight") for k in keys)
    hf = sum(k.startswith("encoder.") or k == "shared.weight" for k in keys)
    if not official and not hf:
        raise CheckpointError(
            f"{where}: not a umT5 encoder checkpoint (no official or transformers key names)"
        )
    return "official" if official > hf else "hf"


def config_from_hf(raw: dict, where: object) -> T5Config:
    """T5Config from a transformers `UMT5EncoderModel` config.json."""
    model_type = raw.get("model_type", "umt5")
    if model_type != "umt5":
        raise CheckpointError(
            f"{where}: model_type {model_type!r}; only umT5 (a bias table per layer) is supported"
        )
    if raw.get("feed_forward_proj", "gated-gelu") != "gated-gelu" or raw.get("is_decoder"):
        raise CheckpointError(
            f"{where}: only a umT5 encoder with feed_forward_proj 'gated-gelu' is supported, got "
            f"feed_forward_proj {raw.get('feed_forward_proj')!r}, is_decoder {raw.get('is_decoder')!r}"
        )
    try:
        return T5Config(
            vocab_size=raw["vocab_size"],
            d_model=raw["d_model"],
            d_kv=raw["d_kv"],
            num_heads=raw["num_heads"],
            d_ff=raw["d_ff"],
            num_layers=raw["num_layers"],
            num_buckets=raw.get("relative_attention_num_buckets", 32),
            max_distance=raw.get("relative_attention_max_distance", 128),
            eps=raw.get("layer_norm_epsilon", 1e-6),
        )
    except KeyError as e:
        raise CheckpointError(f"{where}: config lacks field {e}") from None


def _open_pth(path: Path) -> dict[str, Entry]:
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as e:  # torch raises many types for unreadable files
        raise CheckpointError(
            f"{path}: cannot read as a torch state dict ({type(e).__name__}: {e})"
        ) from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: not a flat state dict of tensors")
    return {k: _TorchEntry(v, path) for k, v in state.items()}


def open_t5(path: str | Path, config: T5Config | None = None) -> tuple[T5Config, Layout, dict[str, Entry]]:
    """Indexes a umT5 checkpoint (headers only, no weight data read).

    Args:
      path: a `.pth` state dict; a `.safetensors` file; a folder of safetensors (with an index when
        sharded); or a Diffusers repo holding `text_encoder/`.
      config: architecture override. Otherwise `config.json` next to the safetensors, else (and
        always for `.pth` files, whose folder's config.json belongs to the DiT) `UMT5_XXL`.

    Returns:
      (config, layout, key -> tensor entry).
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such file or folder")
    if path.is_dir() and (path / "text_encoder").is_dir():
        path = path / "text_encoder"
    if path.is_file() and path.suffix in _TORCH_SUFFIXES:
        tensors = _open_pth(path)
        config_file = None
    else:
        tensors = index_tensors(path)
        config_file = (path if path.is_dir() else path.parent) / "config.json"
    if config is None and config_file is not None and config_file.is_file():
        try:
            config = config_from_hf(json.loads(config_file.read_text()), config_file)
        except json.JSONDecodeError as e:
            raise CheckpointError(f"{config_file}: corrupt JSON ({e})") from None
    return config or UMT5_XXL, detect_layout(tensors, path), tensors


def open_checked(
    path: str | Path, config: T5Config | None = None
) -> tuple[T5Config, Layout, dict[str, Entry], list[tuple[T5KeySpec, list[str]]]]:
    """`open_t5`, then every key, shape and dtype checked (no weight data read).

    Returns:
      (config, layout, key -> tensor entry, plan): the plan is `check_keys`' (per leaf, the key to read
      per layer), ready for `iter_leaves`.

    Raises:
      CheckpointError naming the key and file of any missing, unexpected, mis-shaped or
      non-floating-point tensor.
    """
    config, layout, tensors = open_t5(path, config)
    plan = check_keys(
        config,
        layout,
        {k: e.shape for k, e in tensors.items()},
        {k: e.file for k, e in tensors.items()},
        path,
    )
    for key, entry in tensors.items():
        if entry.dtype not in _DTYPES:
            raise CheckpointError(f"{entry.file}: tensor {key!r} has dtype {entry.dtype}, not a float dtype")
    return config, layout, tensors, plan


def converted_folder(path: str | Path) -> Path | None:
    """The folder written by `cosjax convert` that `path` names (itself, or a converted pipeline
    folder's `text_encoder/`), told by its `cosjax_t5.json`; None when `path` is no such folder."""
    path = user_path(path)
    for folder in (path, path / "text_encoder"):
        if (folder / CONVERTED_FILE).is_file():
            return folder
    return None


def _target_dtype(dtype, tensors: Mapping[str, Entry], first_key: str) -> np.dtype:
    dtype = tensors[first_key].dtype if dtype is None else np.dtype(jnp.dtype(dtype))
    if dtype not in _DTYPES:
        raise ValueError(f"unsupported parameter dtype {dtype}; use float32, bfloat16 or float16")
    return dtype


def iter_leaves(
    plan: list[tuple[T5KeySpec, list[str]]],
    tensors: Mapping[str, Entry],
    dtype: np.dtype,
    allow_nonfinite: bool = False,
) -> Iterator[tuple[tuple[str, ...], np.ndarray]]:
    """Yields (path, leaf) in our layout and `dtype`, one leaf at a time.

    A stacked leaf is one preallocated [num_layers, ...] array filled layer by layer. Every tensor is
    checked finite as it is read (`convert.read_finite`; `NonFiniteError` naming key and file).
    """
    from cosjax.weights.convert import read_finite

    for spec, keys in plan:
        first = tensors[keys[0]].shape
        out = np.empty((len(keys), *(first[::-1] if spec.linear else first)), dtype)
        for i, key in enumerate(keys):
            tensor = read_finite(tensors[key], key, dtype, allow_nonfinite)
            out[i] = tensor.T if spec.linear else tensor
            del tensor
        yield spec.path, (out if spec.stacked else out[0])
        del out  # let the consumer free this leaf before the next one is allocated


def load_t5(
    path: str | Path,
    config: T5Config | None = None,
    dtype=None,
    place: Callable[[np.ndarray], object] = jnp.asarray,
    allow_nonfinite: bool = False,
) -> tuple[T5Config, dict]:
    """Loads a umT5 encoder checkpoint into our parameter tree.

    Args:
      path: see `open_t5`; or a folder written by `cosjax convert` (its `text_encoder/`, or the pipeline
        folder holding it), read by `cosjax.weights.convert.load_converted_t5`.
      config: architecture override (see `open_t5`; for a converted folder it must equal the stored one).
      dtype: parameter dtype (float32, bfloat16 or float16); None keeps the stored dtype of the
        token embedding (bfloat16 for the official file and the Diffusers repos).
      place: applied to each leaf as soon as it is built (default `jnp.asarray`; e.g. a
        `jax.device_put` with a sharding), so its host copy can be dropped before the next is read.
      allow_nonfinite: keep tensors holding NaN or inf (by default a `NonFiniteError`).

    Returns:
      (config, params) with params as described in `cosjax.models.t5`.

    Raises:
      CheckpointError naming the key and file of any missing, unexpected, mis-shaped or
      non-floating-point tensor, before any weight data is read.
    """
    converted = converted_folder(path)
    if converted is not None:
        from cosjax.weights.convert import load_converted_t5

        return load_converted_t5(converted, config, dtype, place, allow_nonfinite)
    config, _, tensors, plan = open_checked(path, config)
    np_dtype = _target_dtype(dtype, tensors, plan[0][1][0])
    params: dict = {}
    for leaf_path, leaf in iter_leaves(plan, tensors, np_dtype, allow_nonfinite):
        node = params
        for name in leaf_path[:-1]:
            node = node.setdefault(name, {})
        node[leaf_path[-1]] = place(leaf)
        del leaf
    return config, params
