"""Streaming conversion of PyTorch Wan checkpoints (DiT, VAE, umT5 encoder) into Orbax folders.

Every key is checked before a byte of weight data is read: missing, unexpected and mis-shaped
tensors raise a `CheckpointError` naming the key and the file. Conversion then streams one
parameter leaf at a time (all layers of one stacked tensor), so peak memory is about one source
tensor plus one stacked leaf, never the whole checkpoint.

When the source is a whole repo, the components it holds besides the DiT are converted too
(`find_components`): the VAE to `vae/` (float32) and the umT5 encoder to `text_encoder/` (the
requested dtype), each an Orbax checkpoint with a `cosjax_vae.json` / `cosjax_t5.json` beside it,
and the tokenizer's json files to `tokenizer/`. `load_converted_vae` / `load_converted_t5` read
them back (`vae_keys.load_vae` and `t5_keys.load_t5` dispatch to them).
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

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
from tqdm.auto import tqdm

from cosjax.configs import DiTConfig
from cosjax.models import t5 as t5_lib
from cosjax.models import vae as vae_lib
from cosjax.models.dit import abstract_params
from cosjax.models.t5 import T5Config
from cosjax.models.vae import VAEConfig
from cosjax.paths import building, check_destination, require_local, user_path
from cosjax.text import DIFFUSERS_WEIGHTS, OFFICIAL_WEIGHTS, TOKENIZER_DIRS, UMT5Tokenizer
from cosjax.weights import t5_keys, vae_keys
from cosjax.weights.dit_keys import KEY_SPECS, KeySpec, Layout, expected_keys, to_leaf, torch_shape
from cosjax.weights.lora import lora_metadata, open_loras, with_loras
from cosjax.weights.safetensors_io import CheckpointError, NonFiniteError, check_finite, describe_keys
from cosjax.weights.sources import CheckpointSource, ExpertSource, open_checkpoint

METADATA_FILE = "cosjax_dit.json"
FORMAT_VERSION = 1
COMPONENT_VERSION = 1  # of cosjax_vae.json / cosjax_t5.json
VAE_DIR, TEXT_ENCODER_DIR, TOKENIZER_DIR = "vae", "text_encoder", "tokenizer"
GROUP_BYTES = 64 * 2**20  # component leaves are written in partial saves of about this many bytes
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
        return describe_keys(keys, files)

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


_FLOAT16_MAX = float(np.finfo(np.float16).max)


def read_finite(entry, key: str, dtype: np.dtype, allow_nonfinite: bool = False) -> np.ndarray:
    """One source tensor (in its own dtype), refused with a `NonFiniteError` naming key and file when
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


def iter_leaves(
    expert: ExpertSource, dtype: np.dtype, allow_nonfinite: bool = False
) -> Iterator[tuple[KeySpec, np.ndarray]]:
    """Yields (spec, leaf) in our layout, one leaf at a time, cast to `dtype`.

    Stacked leaves are filled layer by layer into one preallocated [num_layers, ...] array. Every
    source tensor is checked finite as it is read (see `read_finite`).
    """
    config, layout = expert.config, expert.layout
    leaves = leaf_shapes(config)

    def read(key: str) -> np.ndarray:
        return read_finite(expert.tensors[key], key, dtype, allow_nonfinite)

    for spec in KEY_SPECS:
        if not spec.stacked:
            yield spec, to_leaf(spec, read(spec.key(layout))).astype(dtype)
            continue
        out = np.empty(leaves[spec.path], dtype)
        for layer in range(config.num_layers):
            out[layer] = to_leaf(spec, read(spec.key(layout, layer)))
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
        _merge(self.pending, nest(path, leaf))
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
        ((spec.path, leaf) for spec, leaf in iter_leaves(expert, dtype, allow_nonfinite)),
        len(KEY_SPECS),
        f"convert {expert.name}",
        progress,
        now=stacked.__contains__,
        group_bytes=math.inf,
    )


# ----------------------------------------------------------------------------------------------
# The other components of a repo: VAE, umT5 encoder and tokenizer.


@dataclasses.dataclass
class VAESource:
    """A checked VAE found in a repo (tensor headers or a memory map only, no data read).

    Attributes:
      location: the Diffusers `vae/` folder or the official `.pth` file.
      layout: "diffusers" or "official" key names.
      config: the architecture.
      entries: key -> tensor entry (`vae_keys.Entry`).
    """

    location: Path
    layout: vae_keys.Layout
    config: VAEConfig
    entries: dict


@dataclasses.dataclass
class TextEncoderSource:
    """A checked umT5 encoder found in a repo, with its tokenizer folder.

    Attributes:
      location: the Diffusers `text_encoder/` folder or the official `.pth` file.
      tokenizer: the folder holding `tokenizer.json` (checked readable).
      layout: "hf" or "official" key names.
      config: the architecture.
      tensors: key -> tensor entry (`t5_keys.Entry`).
      plan: per leaf, the key to read per layer (`t5_keys.check_keys`).
    """

    location: Path
    tokenizer: Path
    layout: t5_keys.Layout
    config: T5Config
    tensors: dict
    plan: list


@dataclasses.dataclass
class Components:
    """What a repo holds besides the DiT: each component found (or None), and why others are skipped."""

    vae: VAESource | None = None
    text_encoder: TextEncoderSource | None = None
    skipped: dict[str, str] = dataclasses.field(default_factory=dict)


def find_components(
    src: str | Path, dit: DiTConfig, vae: bool = True, text_encoder: bool = True
) -> Components:
    """Detects and checks the VAE and umT5 encoder of a repo folder, before anything is written.

    Looked for at the top level of `src`: a Diffusers `vae/` or an official `*VAE.pth`
    (`Wan2.1_VAE.pth`, `Wan2.2_VAE.pth`); a Diffusers `text_encoder/` + `tokenizer/` or the official
    `models_t5_umt5-xxl-enc-bf16.pth` + `google/umt5-xxl/`. A file or a bare model folder holds none.

    Args:
      src: the source of `convert_checkpoint`.
      dit: its DiT's architecture (the VAE's z_dim must be its out_dim, the encoder's d_model its
        text_dim).
      vae, text_encoder: False skips that component without looking for it.

    Raises:
      CheckpointError naming the file when a component is present but unusable: missing, unexpected,
      mis-shaped or non-float tensors, a corrupt file, a missing or unreadable tokenizer.json, or an
      architecture that does not fit the DiT.
    """
    src, found = Path(src), Components()
    if vae:
        found.vae = _find_vae(src, dit)
    if text_encoder:
        found.text_encoder = _find_text_encoder(src, dit)
    for name, wanted, got in (("vae", vae, found.vae), ("text_encoder", text_encoder, found.text_encoder)):
        if got is None:
            found.skipped[name] = "not found in the source" if wanted else "not requested"
    return found


def _find_vae(src: Path, dit: DiTConfig) -> VAESource | None:
    if not src.is_dir():
        return None
    if (src / VAE_DIR).is_dir():
        location = src / VAE_DIR
    else:
        files = sorted(src.glob("*VAE.pth"))
        if not files:
            return None
        if len(files) > 1:
            raise CheckpointError(
                f"{src}: several VAE files ({', '.join(f.name for f in files)}); keep one, or pass "
                "vae=False (--no-vae)"
            )
        location = files[0]
    config, layout, entries = vae_keys.open_vae(location)
    if config.z_dim != dit.out_dim:
        raise CheckpointError(
            f"{location}: the VAE has z_dim {config.z_dim}, but the DiT's latents have {dit.out_dim} channels"
        )
    return VAESource(location, layout, config, entries)


def _find_text_encoder(src: Path, dit: DiTConfig) -> TextEncoderSource | None:
    if not src.is_dir():
        return None
    weights = next((src / n for n in (OFFICIAL_WEIGHTS, DIFFUSERS_WEIGHTS) if (src / n).exists()), None)
    if weights is None:
        return None
    config, layout, tensors, plan = t5_keys.open_checked(weights)
    if config.d_model != dit.text_dim:
        raise CheckpointError(
            f"{weights}: the umT5 encoder has d_model {config.d_model}, but the DiT takes text_dim "
            f"{dit.text_dim}"
        )
    return TextEncoderSource(weights, _check_tokenizer(src, weights), layout, config, tensors, plan)


def _check_tokenizer(src: Path, weights: Path) -> Path:
    """The repo's tokenizer folder, its tokenizer.json checked readable by `UMT5Tokenizer`."""
    folder = next((src / n for n in TOKENIZER_DIRS if (src / n).is_dir()), None)
    if folder is None:
        raise CheckpointError(
            f"{src}: {weights.name} has no tokenizer beside it (looked for {', '.join(TOKENIZER_DIRS)}); "
            "pass text_encoder=False (--no-text-encoder) to convert without the text encoder"
        )
    if not (folder / "tokenizer.json").is_file():
        raise CheckpointError(
            f"{folder / 'tokenizer.json'}: not found (the text encoder's tokenizer); pass "
            "text_encoder=False (--no-text-encoder) to convert without the text encoder"
        )
    try:
        UMT5Tokenizer.from_dir(folder)
    except ValueError as e:  # unreadable file, no <pad>, no </s> appended: the message names the file
        raise CheckpointError(str(e)) from None
    return folder


def _vae_leaves(
    vae: VAESource, allow_nonfinite: bool = False
) -> Iterator[tuple[tuple[str, ...], np.ndarray]]:
    """(path, float32 leaf) in our layout, one at a time, each source tensor checked finite."""
    for key, (path, _) in vae_keys.expected_keys(vae.config, vae.layout).items():
        tensor = read_finite(vae.entries[key], key, np.float32, allow_nonfinite)
        yield path, np.ascontiguousarray(vae_keys.to_leaf(path, tensor), np.float32)


def _write_vae(vae: VAESource, folder: Path, progress: bool, allow_nonfinite: bool = False) -> dict:
    """Writes `folder/` (Orbax, float32) + its cosjax_vae.json; returns that json's content."""
    _write_leaves(folder, _vae_leaves(vae, allow_nonfinite), len(vae.entries), "convert vae", progress)
    meta = {
        "format": "cosjax-vae",
        "version": COMPONENT_VERSION,
        "config": dataclasses.asdict(vae.config),
        "dtype": "float32",
        "source": {"path": str(vae.location.resolve()), "layout": vae.layout},
    }
    (folder / vae_keys.CONVERTED_FILE).write_text(json.dumps(meta, indent=2))
    return meta


def _write_text_encoder(
    te: TextEncoderSource, folder: Path, dtype: np.dtype, progress: bool, allow_nonfinite: bool = False
) -> dict:
    """Writes `folder/` (Orbax, `dtype`) + its cosjax_t5.json; returns that json's content."""
    leaves = t5_keys.iter_leaves(te.plan, te.tensors, dtype, allow_nonfinite)
    _write_leaves(folder, leaves, len(te.plan), "convert text_encoder", progress)
    meta = {
        "format": "cosjax-t5",
        "version": COMPONENT_VERSION,
        "config": dataclasses.asdict(te.config),
        "dtype": np.dtype(dtype).name,
        "source": {"path": str(te.location.resolve()), "layout": te.layout},
    }
    (folder / t5_keys.CONVERTED_FILE).write_text(json.dumps(meta, indent=2))
    return meta


def _copy_tokenizer(src: Path, dst: Path) -> list[str]:
    """Copies tokenizer.json and its json siblings (tokenizer_config.json, ...) to `dst`."""
    dst.mkdir()
    names = sorted(p.name for p in src.glob("*.json") if p.is_file())
    for name in names:
        shutil.copyfile(src / name, dst / name)
    return names


def _write_components(
    found: Components, root: Path, dtype: np.dtype, progress: bool, allow_nonfinite: bool = False
) -> dict:
    """Writes the found components under `root`; returns their entries for cosjax_dit.json."""
    out = {}
    if found.vae is not None:
        meta = _write_vae(found.vae, root / VAE_DIR, progress, allow_nonfinite)
        out["vae"] = {"folder": VAE_DIR, "dtype": meta["dtype"], **meta["source"]}
    te = found.text_encoder
    if te is not None:
        meta = _write_text_encoder(te, root / TEXT_ENCODER_DIR, dtype, progress, allow_nonfinite)
        files = _copy_tokenizer(te.tokenizer, root / TOKENIZER_DIR)
        out["text_encoder"] = {"folder": TEXT_ENCODER_DIR, "dtype": meta["dtype"], **meta["source"]}
        out["tokenizer"] = {"folder": TOKENIZER_DIR, "path": str(te.tokenizer.resolve()), "files": files}
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
    check_destination(dst, METADATA_FILE, overwrite, sources=[src, *lora_files], what="DST")
    source = open_checkpoint(src, config)
    for expert in source.experts:
        check_expert(expert)
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
        (tmp / METADATA_FILE).write_text(json.dumps(metadata, indent=2))
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


# ----------------------------------------------------------------------------------------------
# Reading converted components back.


def _read_component_meta(file: Path, kind: str) -> dict:
    try:
        meta = json.loads(file.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{file}: unreadable ({e})") from None
    if meta.get("format") != kind or meta.get("version") != COMPONENT_VERSION:
        raise CheckpointError(f"{file}: not a {kind} folder of version {COMPONENT_VERSION}")
    return meta


def _restore(folder: Path, abstract, dtype: np.dtype, allow_nonfinite: bool = False):
    """The Orbax checkpoint at `folder` as jax arrays of `dtype` on the default device (cast on read),
    each leaf checked finite (`check_restored`)."""
    from orbax.checkpoint.experimental import v1 as ocp

    sharding = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    target = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, dtype, sharding=sharding), abstract)
    return check_restored(ocp.load_pytree(user_path(folder), target), folder, allow_nonfinite)


def check_restored(tree, folder: Path, allow_nonfinite: bool = False):
    """Checks every leaf of a restored parameter tree finite, one leaf at a time (on its devices);
    a `NonFiniteError` names the leaf ("blocks/ffn_in/kernel") and the folder. Returns `tree`."""
    if not allow_nonfinite:
        for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
            check_finite(leaf, "/".join(str(getattr(k, "key", k)) for k in path), folder)
    return tree


def _stored_config(meta: dict, cls, file: Path, override):
    try:
        stored = cls(**meta["config"])
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{file}: bad config ({e})") from None
    if override is not None and override != stored:
        raise CheckpointError(f"{file}: holds {stored}, not the requested {override}")
    return stored


def load_converted_vae(
    folder: str | Path, config: VAEConfig | None = None, allow_nonfinite: bool = False
) -> tuple[VAEConfig, dict]:
    """Reads a VAE folder written by `convert_checkpoint` (`dst/vae/`).

    Args:
      folder: the folder holding `cosjax_vae.json` and the Orbax checkpoint.
      config: if given, must equal the stored config.
      allow_nonfinite: keep leaves holding NaN or inf (by default a `NonFiniteError`).

    Returns:
      (config, params): params a nested dict of float32 jax arrays for `cosjax.models.vae`.

    Raises:
      CheckpointError for a missing, corrupt or foreign `cosjax_vae.json`, a config mismatch or a
      non-finite leaf.
    """
    folder = user_path(folder)
    file = folder / vae_keys.CONVERTED_FILE
    meta = _read_component_meta(file, "cosjax-vae")
    config = _stored_config(meta, VAEConfig, file, config)
    abstract = vae_lib.abstract_params(config)
    return config, _restore(folder, abstract, np.dtype(np.float32), allow_nonfinite)


def load_converted_t5(
    folder: str | Path,
    config: T5Config | None = None,
    dtype=None,
    place: Callable[[jax.Array], object] = jnp.asarray,
    allow_nonfinite: bool = False,
) -> tuple[T5Config, dict]:
    """Reads a umT5 encoder folder written by `convert_checkpoint` (`dst/text_encoder/`).

    Args:
      folder: the folder holding `cosjax_t5.json` and the Orbax checkpoint.
      config: if given, must equal the stored config.
      dtype: parameter dtype (float32, bfloat16, float16); None keeps the stored one.
      place: applied to each restored leaf (e.g. a `jax.device_put` with a sharding).

    Returns:
      (config, params) as `t5_keys.load_t5` returns them.

    Raises:
      CheckpointError for a missing, corrupt or foreign `cosjax_t5.json` or a config mismatch.
    """
    folder = user_path(folder)
    file = folder / t5_keys.CONVERTED_FILE
    meta = _read_component_meta(file, "cosjax-t5")
    config = _stored_config(meta, T5Config, file, config)
    target = numpy_dtype(meta["dtype"] if dtype is None else dtype)
    params = _restore(folder, t5_lib.abstract_params(config), target, allow_nonfinite)
    return config, jax.tree.map(place, params)
