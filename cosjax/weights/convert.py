"""Streaming conversion of PyTorch Wan DiT checkpoints into our stacked parameter tree.

Every key is checked before a byte of weight data is read: missing, unexpected and mis-shaped
tensors raise a `CheckpointError` naming the key and the file. Conversion then streams one
parameter leaf at a time (all layers of one stacked tensor), so peak memory is about one source
tensor plus one stacked leaf, never the whole checkpoint.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
from tqdm.auto import tqdm

from cosjax.configs import DiTConfig
from cosjax.models.dit import abstract_params
from cosjax.weights.dit_keys import KEY_SPECS, KeySpec, Layout, expected_keys, to_leaf, torch_shape
from cosjax.weights.lora import lora_metadata, open_loras, with_loras
from cosjax.weights.safetensors_io import CheckpointError
from cosjax.weights.sources import CheckpointSource, ExpertSource, open_checkpoint

METADATA_FILE = "cosjax_dit.json"
FORMAT_VERSION = 1
_DTYPES = {"float32": np.float32, "bfloat16": ml_dtypes.bfloat16, "float16": np.float16}


def numpy_dtype(name: str | np.dtype) -> np.dtype:
    """'float32' | 'bfloat16' | 'float16' (or a dtype) -> numpy dtype; ValueError otherwise."""
    if not isinstance(name, str):
        name = jnp.dtype(name).name
    if name not in _DTYPES:
        raise ValueError(f"unsupported parameter dtype {name!r}; use one of {', '.join(_DTYPES)}")
    return np.dtype(_DTYPES[name])


def leaf_shapes(config: DiTConfig) -> dict[tuple[str, ...], tuple[int, ...]]:
    """Our parameter tree's leaves as {path: shape}, from `jax.eval_shape` (nothing allocated)."""
    flat = jax.tree_util.tree_flatten_with_path(abstract_params(config))[0]
    return {tuple(k.key for k in path): tuple(leaf.shape) for path, leaf in flat}


def check_keys(
    config: DiTConfig,
    layout: Layout,
    shapes: Mapping[str, tuple[int, ...]],
    files: Mapping[str, object] | None = None,
    where: object = "checkpoint",
) -> None:
    """Checks a checkpoint's keys and shapes against what `config` needs, before any data is read.

    Args:
      config: the architecture the weights must fit.
      layout: "official" or "diffusers" key names.
      shapes: key -> PyTorch tensor shape, as found in the checkpoint.
      files: key -> the file holding it (named in errors).
      where: the checkpoint location, named in errors about missing keys.

    Raises:
      CheckpointError naming the keys (and files) that are missing, unexpected or mis-shaped.
    """
    files = files or {}
    leaves = leaf_shapes(config)
    covered = {spec.path for spec in KEY_SPECS}
    if covered != set(leaves):  # an internal inconsistency between the model and the key map
        raise RuntimeError(f"key map and model disagree: {sorted(covered ^ set(leaves))}")
    expected = expected_keys(config, layout)

    def listing(keys):
        shown = [f"{k!r}" + (f" (in {files[k]})" if k in files else "") for k in keys[:8]]
        return ", ".join(shown) + (f" and {len(keys) - 8} more" if len(keys) > 8 else "")

    missing = [k for k in expected if k not in shapes]
    if missing:
        raise CheckpointError(
            f"{where}: {len(missing)} key(s) missing for the {layout} layout of "
            f"this config: {listing(missing)}"
        )
    unexpected = [k for k in shapes if k not in expected]
    if unexpected:
        raise CheckpointError(
            f"unexpected key(s) for the {layout} layout with {config.num_layers} "
            f"layers: {listing(unexpected)}"
        )
    for key, (spec, _) in expected.items():
        want = torch_shape(spec, leaves[spec.path], config)
        if tuple(shapes[key]) != want:
            raise CheckpointError(
                f"{files.get(key, where)}: tensor {key!r} has shape "
                f"{tuple(shapes[key])}, expected {want} for dim={config.dim}, "
                f"ffn_dim={config.ffn_dim}, in_dim={config.in_dim}, "
                f"out_dim={config.out_dim}"
            )


def check_expert(expert: ExpertSource) -> None:
    """`check_keys` on an opened expert, plus a check that every tensor is floating point."""
    check_keys(
        expert.config,
        expert.layout,
        {k: e.shape for k, e in expert.tensors.items()},
        {k: e.file for k, e in expert.tensors.items()},
        expert.location,
    )
    for key, entry in expert.tensors.items():
        if entry.dtype.kind != "f" and entry.dtype != ml_dtypes.bfloat16:
            raise CheckpointError(f"{entry.file}: tensor {key!r} has dtype {entry.dtype}, not float")


def iter_leaves(expert: ExpertSource, dtype: np.dtype) -> Iterator[tuple[KeySpec, np.ndarray]]:
    """Yields (spec, leaf) in our layout, one leaf at a time, cast to `dtype`.

    Stacked leaves are filled layer by layer into one preallocated [num_layers, ...] array.
    """
    config, layout = expert.config, expert.layout
    leaves = leaf_shapes(config)
    for spec in KEY_SPECS:
        if not spec.stacked:
            yield spec, to_leaf(spec, expert.tensors[spec.key(layout)].read()).astype(dtype)
            continue
        out = np.empty(leaves[spec.path], dtype)
        for layer in range(config.num_layers):
            out[layer] = to_leaf(spec, expert.tensors[spec.key(layout, layer)].read())
        yield spec, out
        del out  # let the consumer free this leaf before the next one is allocated


def nest(path: tuple[str, ...], value) -> dict:
    """('a', 'b') -> {'a': {'b': value}}."""
    for name in reversed(path):
        value = {name: value}
    return value


def _merge(tree: dict, other: dict) -> dict:
    for k, v in other.items():
        tree[k] = _merge(tree.get(k, {}), v) if isinstance(v, dict) else v
    return tree


def load_expert_arrays(expert: ExpertSource, dtype: np.dtype, place=np.asarray) -> dict:
    """The whole parameter tree of one expert (for direct loading).

    Args:
      place: applied to each leaf as soon as it is built (e.g. `jax.device_put`), so the host copy
        of a leaf can be dropped before the next is read.
    """
    check_expert(expert)
    tree: dict = {}
    for spec, leaf in iter_leaves(expert, dtype):
        _merge(tree, nest(spec.path, place(leaf)))
        del leaf
    return tree


def _return_freed_memory() -> None:
    """Hands freed heap back to the OS (glibc only; a no-op elsewhere).

    tensorstore's writer threads allocate chunk buffers in per-thread malloc arenas that glibc keeps
    after they are freed; without trimming, each written leaf would raise the resident baseline.
    """
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _write_expert(expert: ExpertSource, folder: Path, dtype: np.dtype, progress: bool) -> None:
    from orbax.checkpoint.experimental import v1 as ocp

    small: dict = {}
    bar = tqdm(total=len(KEY_SPECS), desc=f"convert {expert.name}", unit="tensor", disable=not progress)
    # partial.save is synchronous and we never touch a leaf after saving it, so orbax need not keep
    # its own deep copy of each host array (that copy would double the peak memory).
    no_copy = ocp.options.MemoryOptions(deepcopy_host_arrays=False)
    with ocp.Context(memory_options=no_copy):
        for spec, leaf in iter_leaves(expert, dtype):
            if spec.stacked:  # write big leaves as soon as they are complete, then drop them
                ocp.partial.save(folder, nest(spec.path, leaf))
            else:
                _merge(small, nest(spec.path, leaf))
            del leaf
            _return_freed_memory()
            bar.update()
        ocp.partial.save(folder, small)
        ocp.partial.finalize(folder)
    bar.close()


def convert_checkpoint(
    src: str | Path,
    dst: str | Path,
    dtype: str = "bfloat16",
    config: DiTConfig | None = None,
    overwrite: bool = False,
    progress: bool = True,
    loras: Mapping[str, Sequence[tuple[str | Path, float]]] | None = None,
) -> Path:
    """Converts a PyTorch Wan DiT checkpoint (official or Diffusers layout) to an Orbax folder.

    Output: `dst/cosjax_dit.json` (config, experts, boundary, dtype, source, loras) and one Orbax
    checkpoint per expert (`dst/dit/`, or `dst/high_noise/` + `dst/low_noise/`). The folder appears
    only when complete: work happens in a hidden sibling folder renamed at the end and removed on
    any failure.

    Args:
      src: checkpoint path (see `cosjax.weights.sources`).
      dst: output folder; must not exist unless `overwrite`.
      dtype: parameter dtype to store: "bfloat16" (default), "float32" or "float16".
      config: architecture override (e.g. a preset's DiTConfig).
      overwrite: replace an existing `dst`.
      progress: show a progress bar per expert.
      loras: expert name ("high_noise", "low_noise" or "dit") -> [(LoRA safetensors file, strength)],
        merged into that expert's Linear weights in float32 before the cast to `dtype` (see
        `cosjax.weights.lora`). Every LoRA key is checked before anything is written.

    Returns:
      The output folder.
    """
    np_dtype = numpy_dtype(dtype)
    source = open_checkpoint(src, config)
    for expert in source.experts:
        check_expert(expert)
    opened = open_loras(source.experts, loras)
    metadata = _metadata(source, src, np_dtype)
    metadata["loras"] = lora_metadata(opened)
    dst = Path(dst)
    if dst.exists() and not overwrite:
        raise FileExistsError(f"{dst} already exists; pass overwrite=True (--overwrite) to replace it")
    tmp = dst.parent / f".{dst.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir(parents=True)
        for expert in source.experts:
            merged = with_loras(expert, opened.get(expert.name, ()))
            _write_expert(merged, tmp / expert.name, np_dtype, progress)
        (tmp / METADATA_FILE).write_text(json.dumps(metadata, indent=2))
        if dst.exists():
            old = dst.parent / f".{dst.name}.old-{os.getpid()}"
            dst.rename(old)
            tmp.rename(dst)
            shutil.rmtree(old)
        else:
            tmp.rename(dst)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dst


def _metadata(source: CheckpointSource, src, dtype: np.dtype) -> dict:
    first = source.experts[0]
    for expert in source.experts[1:]:
        if expert.config != first.config:
            raise CheckpointError(f"{expert.location}: its config differs from {first.location}'s")
    return {
        "format": "cosjax-dit",
        "version": FORMAT_VERSION,
        "config": first.config.to_dict(),
        "experts": [e.name for e in source.experts],
        "high_noise_expert": source.high_noise_expert,
        "boundary": source.boundary,
        "dtype": np.dtype(dtype).name,
        "source": {"path": str(Path(src).resolve()), "layout": first.layout},
    }
