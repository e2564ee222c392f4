"""Streaming conversion of PyTorch Wan checkpoints (DiT, VAE, umT5 encoder) into Orbax folders.

The writer of the converted format (`read.py` is its reader; file names in `names.py`). Every key is
checked before a byte of weight data is read: missing, unexpected and mis-shaped tensors raise a
`CheckpointError` naming the key and the file. Conversion then streams one parameter leaf at a time
(all layers of one stacked tensor), so peak memory is about one source tensor plus one stacked leaf,
never the whole checkpoint.

When the source is a whole repo, the components it holds besides the DiT are converted too
(`components.find_components`): the VAE to `vae/` (float32) and the umT5 encoder to `text_encoder/`
(the requested dtype), each an Orbax checkpoint with a `cosjax_vae.json` / `cosjax_t5.json` beside it,
and the tokenizer's json files to `tokenizer/`.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import json
import math
import shutil
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from cosjax.configs import DiTConfig
from cosjax.paths import building, check_destination, require_local, user_path
from cosjax.weights import names
from cosjax.weights.components import Components, TextEncoderSource, VAESource, find_components
from cosjax.weights.dit_keys import KEY_SPECS
from cosjax.weights.keymap import set_leaf
from cosjax.weights.lora import lora_metadata, open_loras, with_loras
from cosjax.weights.sources import CheckpointSource, ExpertSource, open_checkpoint
from cosjax.weights.tensors import CheckpointError, numpy_dtype

GROUP_BYTES = 64 * 2**20  # component leaves are written in partial saves of about this many bytes


def _return_freed_memory() -> None:
    """Hands freed heap back to the OS (glibc only; a no-op elsewhere).

    tensorstore's writer threads allocate chunk buffers in per-thread malloc arenas that glibc keeps
    after they are freed; without trimming, each written leaf would raise the resident baseline.
    """
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class _PartialWriter:
    """Gathers leaves of one Orbax checkpoint and writes them with partial saves (see `_partial_writer`).

    A group is written, then dropped, once it holds `group_bytes`, or at once on `add(..., now=True)`.
    """

    def __init__(self, folder: Path, group_bytes: float):
        self.folder, self.group_bytes = folder, group_bytes
        self.pending: dict = {}
        self.size = 0

    def add(self, path: tuple[str, ...], leaf: np.ndarray, now: bool = False) -> None:
        """Adds one leaf (any shape and dtype) at `path` of the tree."""
        set_leaf(self.pending, path, leaf)
        self.size += leaf.nbytes
        if now or self.size >= self.group_bytes:
            self.flush()

    def flush(self) -> None:
        """Writes the gathered leaves (one partial save) and drops them."""
        from orbax.checkpoint.experimental import v1 as ocp

        if self.pending:
            ocp.partial.save(self.folder, self.pending)
        self.pending, self.size = {}, 0


@contextlib.contextmanager
def _partial_writer(folder: Path, group_bytes: float = GROUP_BYTES) -> Iterator[_PartialWriter]:
    """A `_PartialWriter` for `folder` (absolute); the checkpoint is finalized when the block exits
    without an error."""
    from orbax.checkpoint.experimental import v1 as ocp

    # partial.save is synchronous and we never touch a leaf after saving it, so orbax need not keep
    # its own deep copy of each host array (that copy would double the peak memory).
    no_copy = ocp.options.MemoryOptions(deepcopy_host_arrays=False)
    with ocp.Context(memory_options=no_copy):
        writer = _PartialWriter(folder, group_bytes)
        yield writer
        writer.flush()
        ocp.partial.finalize(folder)


def _write_leaves(
    folder: Path,
    leaves: Iterable[tuple[tuple[str, ...], np.ndarray]],
    total: int,
    desc: str,
    progress: bool,
    now: Callable[[tuple[str, ...]], bool] | None = None,
    group_bytes: float = GROUP_BYTES,
) -> None:
    """Streams (path, leaf) pairs into an Orbax checkpoint at `folder`, dropping each once written.

    Args:
      now: path -> write this leaf at once (with whatever is gathered) instead of grouping it.
      group_bytes: gathered leaves are written once they hold this many bytes.
    """
    bar = tqdm(total=total, desc=desc, unit="tensor", disable=not progress)
    with _partial_writer(folder, group_bytes) as writer:
        for path, leaf in leaves:
            writer.add(path, leaf, now=bool(now and now(path)))
            del leaf
            _return_freed_memory()
            bar.update()
    bar.close()


def _write_expert(
    expert: ExpertSource, folder: Path, dtype: np.dtype, progress: bool, allow_nonfinite: bool = False
) -> None:
    stacked = {spec.path for spec in KEY_SPECS if spec.stacked}
    # big (stacked) leaves are written as soon as they are complete, small ones gathered until then
    _write_leaves(
        folder,
        expert.leaves(dtype, allow_nonfinite),
        len(KEY_SPECS),
        f"convert {expert.name}",
        progress,
        now=stacked.__contains__,
        group_bytes=math.inf,
    )


def _component_metadata(kind: str, config, dtype: np.dtype, location: Path, layout: str) -> dict:
    return {
        "format": kind,
        "version": names.COMPONENT_VERSION,
        "config": dataclasses.asdict(config),
        "dtype": np.dtype(dtype).name,
        "source": {"path": str(location.resolve()), "layout": layout},
    }


def _write_vae(vae: VAESource, folder: Path, progress: bool, allow_nonfinite: bool = False) -> dict:
    """Writes `folder/` (Orbax, float32) + its cosjax_vae.json; returns that json's content."""
    _write_leaves(folder, vae.leaves(allow_nonfinite), len(vae.entries), "convert vae", progress)
    meta = _component_metadata(names.VAE_FORMAT, vae.config, np.float32, vae.location, vae.layout)
    (folder / names.VAE_METADATA).write_text(json.dumps(meta, indent=2))
    return meta


def _write_text_encoder(
    te: TextEncoderSource, folder: Path, dtype: np.dtype, progress: bool, allow_nonfinite: bool = False
) -> dict:
    """Writes `folder/` (Orbax, `dtype`) + its cosjax_t5.json; returns that json's content."""
    _write_leaves(folder, te.leaves(dtype, allow_nonfinite), len(te.plan), "convert text_encoder", progress)
    meta = _component_metadata(names.T5_FORMAT, te.config, dtype, te.location, te.layout)
    (folder / names.T5_METADATA).write_text(json.dumps(meta, indent=2))
    return meta


def _copy_tokenizer(src: Path, dst: Path) -> list[str]:
    """Copies tokenizer.json and its json siblings (tokenizer_config.json, ...) to `dst`."""
    dst.mkdir()
    files = sorted(p.name for p in src.glob("*.json") if p.is_file())
    for name in files:
        shutil.copyfile(src / name, dst / name)
    return files


def _write_components(
    found: Components, root: Path, dtype: np.dtype, progress: bool, allow_nonfinite: bool = False
) -> dict:
    """Writes the found components under `root`; returns their entries for cosjax_dit.json."""
    out = {}
    if found.vae is not None:
        meta = _write_vae(found.vae, root / names.VAE_DIR, progress, allow_nonfinite)
        out["vae"] = {"folder": names.VAE_DIR, "dtype": meta["dtype"], **meta["source"]}
    te = found.text_encoder
    if te is not None:
        meta = _write_text_encoder(te, root / names.TEXT_ENCODER_DIR, dtype, progress, allow_nonfinite)
        files = _copy_tokenizer(te.tokenizer, root / names.TOKENIZER_DIR)
        out["text_encoder"] = {"folder": names.TEXT_ENCODER_DIR, "dtype": meta["dtype"], **meta["source"]}
        out["tokenizer"] = {
            "folder": names.TOKENIZER_DIR,
            "path": str(te.tokenizer.resolve()),
            "files": files,
        }
    return out


def convert_checkpoint(
    src: str | Path,
    dst: str | Path,
    dtype: str = "bfloat16",
    config: DiTConfig | None = None,
    overwrite: bool = False,
    progress: bool = True,
    loras: Mapping[str, Sequence[tuple[str | Path, float]]] | None = None,
    vae: bool = True,
    text_encoder: bool = True,
    allow_nonfinite: bool = False,
) -> Path:
    """Converts a PyTorch Wan checkpoint or repo (official or Diffusers layout) to an Orbax folder.

    Output: `dst/cosjax_dit.json` (config, experts, boundary, dtype, source, loras, and the components
    converted or skipped) and one Orbax checkpoint per expert (`dst/dit/`, or `dst/high_noise/` +
    `dst/low_noise/`); plus, when `src` is a repo holding them (`find_components`), `dst/vae/`
    (float32, with `cosjax_vae.json`), `dst/text_encoder/` (`dtype`, with `cosjax_t5.json`) and
    `dst/tokenizer/`: a folder `cosjax.Pipeline.from_pretrained` loads whole. Everything is checked
    before anything is written, and the folder appears only when complete: work happens in a hidden
    sibling folder renamed at the end and removed on any failure; such folders left by a killed
    conversion are removed by the next one (`cosjax.paths.clean_stale_temps`).

    Args:
      src: checkpoint path (see `cosjax.weights.sources`).
      dst: output folder (local): absent, or an empty folder, or with `overwrite` an earlier converted
        folder (holding cosjax_dit.json). Any other folder, and one that is, contains or lies inside
        `src` or a LoRA file, is refused before anything is read (`cosjax.paths.check_destination`).
      dtype: parameter dtype of the DiT and text encoder: "bfloat16" (default), "float32" or "float16".
      config: architecture override (e.g. a preset's DiTConfig).
      overwrite: replace an earlier converted `dst`.
      progress: show a progress bar per expert and component.
      loras: expert name ("high_noise", "low_noise" or "dit") -> [(LoRA safetensors file, strength)],
        merged into that expert's Linear weights in float32 before the cast to `dtype` (see
        `cosjax.weights.lora`). Every LoRA key is checked before anything is written.
      vae: convert the VAE `src` holds (if any).
      text_encoder: convert the umT5 encoder and tokenizer `src` holds (if any).
      allow_nonfinite: keep tensors holding NaN or inf. By default every source tensor (and every
        LoRA tensor, before anything is written) is checked as it is read, and the first non-finite
        one raises a `NonFiniteError` naming its key and file.

    Returns:
      The output folder (absolute).
    """
    np_dtype = numpy_dtype(dtype)
    src = require_local(user_path(src), "SRC", "copy the checkpoint to a local folder first")
    fix = "convert to a local folder, then copy it (gcloud storage cp -r)"
    dst = require_local(user_path(dst), "DST", fix)
    lora_files = [path for pairs in (loras or {}).values() for path, _ in pairs]
    check_destination(dst, names.DIT_METADATA, overwrite, sources=[src, *lora_files], what="DST")
    source = open_checkpoint(src, config)
    for expert in source.experts:
        expert.check()
    opened = open_loras(source.experts, loras, allow_nonfinite)
    metadata = _metadata(source, src, np_dtype)
    metadata["loras"] = lora_metadata(opened)
    found = find_components(src, source.experts[0].config, vae, text_encoder)
    with building(dst) as tmp:  # absolute, as orbax's partial saves need
        for expert in source.experts:
            merged = with_loras(expert, opened.get(expert.name, ()))
            _write_expert(merged, tmp / expert.name, np_dtype, progress, allow_nonfinite)
        metadata["components"] = _write_components(found, tmp, np_dtype, progress, allow_nonfinite)
        metadata["skipped_components"] = found.skipped
        (tmp / names.DIT_METADATA).write_text(json.dumps(metadata, indent=2))
    return dst


def _metadata(source: CheckpointSource, src, dtype: np.dtype) -> dict:
    first = source.experts[0]
    for expert in source.experts[1:]:
        if expert.config != first.config:
            raise CheckpointError(f"{expert.location}: its config differs from {first.location}'s")
    experts = [e.name for e in source.experts]
    return dit_metadata(first.config, experts, source.boundary, dtype, str(Path(src).resolve()), first.layout)


def dit_metadata(
    config: DiTConfig, experts: Sequence[str], boundary: float | None, dtype, path: str | None, layout: str
) -> dict:
    """The content of `cosjax_dit.json` (before the converter adds loras and components)."""
    return {
        "format": names.DIT_FORMAT,
        "version": names.DIT_VERSION,
        "config": config.to_dict(),
        "experts": list(experts),
        "high_noise_expert": "high_noise" if "high_noise" in experts else None,
        "boundary": boundary,
        "dtype": np.dtype(dtype).name,
        "source": {"path": path, "layout": layout},
    }


def save_dit(
    path: str | Path,
    config: DiTConfig,
    experts: dict[str, Any],
    boundary: float | None = None,
    overwrite: bool = False,
) -> Path:
    """Writes parameters (e.g. trained or sharded ones) as a converted folder `load_dit` reads.

    Same layout as `convert_checkpoint`: `cosjax_dit.json` + one Orbax checkpoint per expert, written
    in a hidden sibling folder and renamed into place when complete. Sharded arrays are saved by every
    host for its own shards. `path` must be absent, an empty folder, or (with `overwrite`) a converted
    folder; any other folder is refused (`cosjax.paths.check_destination`).
    """
    from orbax.checkpoint.experimental import v1 as ocp

    path = require_local(user_path(path), "save_dit's folder", "save locally, then copy the folder")
    check_destination(path, names.DIT_METADATA, overwrite)
    dtypes = {leaf.dtype for params in experts.values() for leaf in jax.tree.leaves(params)}
    if len(dtypes) != 1:
        raise ValueError(f"all parameters must share one dtype, found {sorted(str(d) for d in dtypes)}")
    with building(path) as tmp:
        for name, params in experts.items():
            ocp.save_pytree(tmp / name, params)
        meta = dit_metadata(config, list(experts), boundary, jnp.dtype(dtypes.pop()), None, "cosjax")
        (tmp / names.DIT_METADATA).write_text(json.dumps(meta, indent=2))
    return path
