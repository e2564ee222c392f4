"""Reading weights into parameter trees: converted folders (ours) and PyTorch VAE / umT5 sources.

Converted folders (written by `convert.py`, names in `names.py`): `read_dit_metadata` +
`restore_experts` (the DiT; `store.load_dit` wraps them), `load_converted_vae`, `load_converted_t5`.
Every restored leaf is checked finite (`check_restored`). `load_vae` and `load_t5` take either a
converted folder or a PyTorch source (`components.open_vae` / `open_t5`) and give the same tree.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from cosjax.configs import DiTConfig, VAEConfig
from cosjax.models import t5 as t5_lib
from cosjax.models import vae as vae_lib
from cosjax.models.dit import abstract_params as dit_abstract_params
from cosjax.models.t5 import T5Config
from cosjax.paths import AnyPath, require_local, user_path
from cosjax.weights import names
from cosjax.weights.components import open_diffusers_vae, open_official_vae, open_t5, open_vae
from cosjax.weights.keymap import build_tree
from cosjax.weights.tensors import CheckpointError, check_finite, numpy_dtype


def read_metadata(file: AnyPath, kind: str, version: int) -> dict:
    """The json beside a converted folder, checked to be of format `kind` and `version`."""
    try:
        meta = json.loads(file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(
            f"{file}: unreadable ({e}); the converted folder is damaged: convert the checkpoint again"
        ) from None
    if not isinstance(meta, dict) or (meta.get("format"), meta.get("version")) != (kind, version):
        raise CheckpointError(f"{file}: not a {kind} folder of version {version}")
    return meta


def _stored_config(meta: dict, read: Callable[[dict], object], file: AnyPath, override=None):
    try:
        stored = read(meta["config"])
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{file}: bad config ({e})") from None
    if override is not None and override != stored:
        raise CheckpointError(f"{file}: holds {stored}, not the requested {override}")
    return stored


def check_restored(tree, folder: AnyPath, allow_nonfinite: bool = False):
    """Checks every leaf of a restored parameter tree finite, one leaf at a time (on its devices);
    a `NonFiniteError` names the leaf ("blocks/ffn_in/kernel") and the folder. Returns `tree`."""
    if not allow_nonfinite:
        for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
            check_finite(leaf, "/".join(str(getattr(k, "key", k)) for k in path), folder)
    return tree


def restore(folder: AnyPath, abstract, dtype: np.dtype, shardings=None, allow_nonfinite: bool = False):
    """The Orbax checkpoint at `folder` restored as `abstract`'s tree in `dtype` (cast on read), on
    `shardings` (a matching tree) or the default device, each leaf checked finite."""
    from orbax.checkpoint.experimental import v1 as ocp

    if shardings is None:
        single = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        shardings = jax.tree.map(lambda _: single, abstract)
    target = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, dtype, sharding=s), abstract, shardings)
    return check_restored(ocp.load_pytree(folder, target), folder, allow_nonfinite)


# ----------------------------------------------------------------------------------------------
# DiT


def read_dit_metadata(path: AnyPath) -> tuple[dict, DiTConfig, np.dtype]:
    """(metadata, config, stored dtype) of a converted DiT folder (its `cosjax_dit.json`)."""
    file = path / names.DIT_METADATA
    meta = read_metadata(file, names.DIT_FORMAT, names.DIT_VERSION)
    config = _stored_config(meta, DiTConfig.from_dict, file)
    return meta, config, numpy_dtype(meta["dtype"])


def restore_experts(path: AnyPath, shardings=None, allow_nonfinite: bool = False) -> tuple[dict, dict]:
    """(metadata, expert name -> params in the stored dtype) of a converted DiT folder."""
    meta, config, stored = read_dit_metadata(path)
    experts = {}
    for name in meta["experts"]:
        if not (path / name).is_dir():
            raise CheckpointError(f"{path / name}: expert folder is missing")
        experts[name] = restore(path / name, dit_abstract_params(config), stored, shardings, allow_nonfinite)
    return meta, experts


# ----------------------------------------------------------------------------------------------
# VAE


def converted_vae_folder(path: str | os.PathLike) -> Path | None:
    """The folder written by `cosjax convert` that `path` names (itself, or a converted pipeline
    folder's `vae/`), told by its `cosjax_vae.json`; None when `path` is no such folder."""
    path = user_path(path)
    for folder in (path, path / names.VAE_DIR):
        if (folder / names.VAE_METADATA).is_file():
            return folder
    return None


def load_converted_vae(
    folder: str | Path, config: VAEConfig | None = None, allow_nonfinite: bool = False
) -> tuple[VAEConfig, dict]:
    """Reads a VAE folder written by `convert_checkpoint` (`dst/vae/`): (config, float32 params).

    Raises:
      CheckpointError for a missing, corrupt or foreign `cosjax_vae.json`, a config mismatch (when
      `config` is given) or a non-finite leaf.
    """
    folder = user_path(folder)
    file = folder / names.VAE_METADATA
    meta = read_metadata(file, names.VAE_FORMAT, names.COMPONENT_VERSION)
    config = _stored_config(meta, lambda c: VAEConfig(**c), file, config)
    return config, restore(
        folder, vae_lib.abstract_params(config), np.dtype(np.float32), None, allow_nonfinite
    )


def load_vae(path: str | os.PathLike, config: VAEConfig | None = None, allow_nonfinite: bool = False):
    """Loads a Wan VAE: a converted folder, or PyTorch weights in either layout, told by the path.

    Args:
      path: a folder written by `cosjax convert` (its `vae/`, or the pipeline folder holding it); an
        official `.pth` / `.pt` file (or a folder holding exactly one `*VAE.pth` and no Diffusers VAE
        weights, e.g. an official Wan2.2-TI2V-5B download); or the Diffusers layout (a pipeline / VAE
        folder or `.safetensors` file).
      config: the architecture (e.g. the model preset's VAE); None: the stored one, config.json
        (Diffusers) or the VAE preset of the file's latent width (official).
      allow_nonfinite: keep tensors holding NaN or inf (by default a `NonFiniteError` naming the key
        and file of the first one).

    Returns:
      (config, params): params a nested dict of float32 jax arrays for `cosjax.models.vae`, the same
      for the same weights in any layout.

    Raises:
      CheckpointError naming the file and key for a missing, corrupt or foreign file, an unknown
      z_dim, and missing, unexpected, mis-shaped or non-float tensors.
    """
    converted = converted_vae_folder(path)
    if converted is not None:
        return load_converted_vae(converted, config, allow_nonfinite)
    what, fix = "a PyTorch VAE (memory-mapped)", "load a converted folder, or copy it locally"
    source = open_vae(require_local(user_path(path), what, fix), config)
    return source.config, build_tree(source.leaves(allow_nonfinite), lambda _, leaf: jnp.asarray(leaf))


def load_vae_diffusers(
    path: str | os.PathLike, config: VAEConfig | None = None, allow_nonfinite: bool = False
):
    """`load_vae` of a Diffusers-layout VAE (a pipeline folder with `vae/`, the VAE folder, or its file)."""
    source = open_diffusers_vae(Path(path), config)
    return source.config, build_tree(source.leaves(allow_nonfinite), lambda _, leaf: jnp.asarray(leaf))


def load_vae_official(
    path: str | os.PathLike, config: VAEConfig | None = None, allow_nonfinite: bool = False
):
    """`load_vae` of an official `Wan2.x_VAE.pth` (config None: the VAE preset of its latent width)."""
    source = open_official_vae(Path(path), config)
    return source.config, build_tree(source.leaves(allow_nonfinite), lambda _, leaf: jnp.asarray(leaf))


# ----------------------------------------------------------------------------------------------
# umT5 encoder


def converted_t5_folder(path: str | os.PathLike) -> Path | None:
    """The folder written by `cosjax convert` that `path` names (itself, or a converted pipeline
    folder's `text_encoder/`), told by its `cosjax_t5.json`; None when `path` is no such folder."""
    path = user_path(path)
    for folder in (path, path / names.TEXT_ENCODER_DIR):
        if (folder / names.T5_METADATA).is_file():
            return folder
    return None


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

    Raises:
      CheckpointError for a missing, corrupt or foreign `cosjax_t5.json` or a config mismatch.
    """
    folder = user_path(folder)
    file = folder / names.T5_METADATA
    meta = read_metadata(file, names.T5_FORMAT, names.COMPONENT_VERSION)
    config = _stored_config(meta, lambda c: T5Config(**c), file, config)
    target = numpy_dtype(meta["dtype"] if dtype is None else dtype)
    params = restore(folder, t5_lib.abstract_params(config), target, None, allow_nonfinite)
    return config, jax.tree.map(place, params)


def load_t5(
    path: str | Path,
    config: T5Config | None = None,
    dtype=None,
    place: Callable[[np.ndarray], object] = jnp.asarray,
    allow_nonfinite: bool = False,
) -> tuple[T5Config, dict]:
    """Loads a umT5 encoder: a converted folder, or PyTorch weights (see `components.open_t5`).

    Args:
      path: a folder written by `cosjax convert` (its `text_encoder/`, or the pipeline folder holding
        it); or a `.pth` state dict, a `.safetensors` file, a folder of safetensors, or a Diffusers repo
        holding `text_encoder/`.
      config: architecture override (for a converted folder it must equal the stored one).
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
    converted = converted_t5_folder(path)
    if converted is not None:
        return load_converted_t5(converted, config, dtype, place, allow_nonfinite)
    source = open_t5(path, config)
    np_dtype = source.stored_dtype() if dtype is None else np.dtype(jnp.dtype(dtype))
    numpy_dtype(np_dtype)  # float32, bfloat16 or float16 only
    return source.config, build_tree(source.leaves(np_dtype, allow_nonfinite), lambda _, leaf: place(leaf))
