"""Loading a DiT for use: from our converted Orbax folder (`read.py`) or straight from a PyTorch
checkpoint, cast and placed on a mesh (`load_dit`, `peek_dit`). Writing one is `convert.py`'s (`save_dit`)."""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
from jax.sharding import Mesh

from cosjax.configs import DiTConfig
from cosjax.models.dit import WanDiT, abstract_params
from cosjax.parallel import param_shardings
from cosjax.paths import AnyPath, require_local, user_path
from cosjax.weights import names
from cosjax.weights.keymap import build_tree
from cosjax.weights.read import read_dit_metadata, restore_experts
from cosjax.weights.sources import open_checkpoint
from cosjax.weights.tensors import numpy_dtype

METADATA_FILE = names.DIT_METADATA

Params = Any


@dataclasses.dataclass
class LoadedDiT:
    """A DiT ready to run: its config and one parameter tree per expert.

    Attributes:
      config: the architecture.
      experts: "dit" -> params, or "high_noise" / "low_noise" -> params for an A14B mixture.
      boundary: for mixtures, the fraction of 1000 timesteps at and above which `high_noise` runs.
      dtype: the parameters' dtype, also the default compute dtype.
    """

    config: DiTConfig
    experts: dict[str, Params]
    boundary: float | None
    dtype: jnp.dtype

    @property
    def params(self) -> Params:
        """The parameters of a single-expert model (use `experts[...]` for a mixture)."""
        if len(self.experts) != 1:
            raise ValueError(f"this checkpoint has experts {list(self.experts)}; use .experts[name]")
        return next(iter(self.experts.values()))

    def module(self, dtype: jnp.dtype | None = None, attention_backend: str | None = None) -> WanDiT:
        """The linen module; compute dtype defaults to the parameters' dtype."""
        return WanDiT(
            self.config,
            dtype=dtype or self.dtype,
            param_dtype=self.dtype,
            attention_backend=attention_backend,
        )

    def __call__(self, x, t, context, y=None, plan=None, expert: str | None = None):
        """Jitted forward of one expert (see `WanDiT.__call__` for shapes)."""
        params = self.params if expert is None else self.experts[expert]
        return _jitted_apply(self.module())(params, x, t, context, y, plan)


@functools.lru_cache(maxsize=8)
def _jitted_apply(module: WanDiT):
    return jax.jit(lambda p, x, t, c, y, plan: module.apply({"params": p}, x, t, c, y, plan))


def load_dit(
    path: str | Path,
    dtype: str | None = None,
    config: DiTConfig | None = None,
    mesh: Mesh | None = None,
    allow_nonfinite: bool = False,
) -> LoadedDiT:
    """Loads a DiT from a converted folder (`cosjax convert`) or directly from PyTorch weights.

    Args:
      path: a folder written by `convert_checkpoint` (a local path, relative or absolute, or a URL
        such as `gs://bucket/model`), or any local PyTorch checkpoint that
        `cosjax.weights.sources.open_checkpoint` recognises.
      dtype: parameter dtype ("float32", "bfloat16", "float16"); None keeps the stored dtype
        (for PyTorch weights, the dtype of `patch_embedding.weight`).
      config: architecture override for PyTorch checkpoints without a usable config.json.
      mesh: place the parameters on this mesh with `cosjax.parallel.param_shardings`. A converted
        folder is restored straight into those shardings (each host reads only its shards); PyTorch
        weights are placed leaf by leaf.
      allow_nonfinite: keep parameters holding NaN or inf. By default every tensor is checked as it
        is read (PyTorch) or restored (converted), one at a time, and the first non-finite one raises
        a `NonFiniteError` naming its key and file or folder.

    Returns:
      A LoadedDiT with parameters on the default device, or sharded over `mesh`.
    """
    path = user_path(path)
    if (path / METADATA_FILE).is_file():
        return _load_converted(path, dtype, mesh, allow_nonfinite)
    what = f"holds no {METADATA_FILE} (not a converted folder); a PyTorch checkpoint (memory-mapped)"
    fix = "convert it (cosjax convert) and load the converted folder from there, or copy it locally"
    source = open_checkpoint(require_local(path, what, fix), config)
    first = source.experts[0]
    stored = first.tensors["patch_embedding.weight"].dtype
    np_dtype = numpy_dtype(dtype or stored.name)
    experts = {
        expert.name: _place_expert(expert, np_dtype, mesh, allow_nonfinite) for expert in source.experts
    }
    return LoadedDiT(first.config, experts, source.boundary, jnp.dtype(np_dtype))


def peek_dit(path: str | Path, dtype: str | None = None) -> tuple[DiTConfig, tuple[str, ...], jnp.dtype]:
    """(config, expert names, parameter dtype `load_dit` would give) without reading any weights
    (a converted folder's metadata, or a PyTorch checkpoint's headers); paths as `load_dit` takes them."""
    path = user_path(path)
    if (path / METADATA_FILE).is_file():
        meta, config, stored_dtype = read_dit_metadata(path)
        experts, stored = tuple(meta["experts"]), stored_dtype.name
    else:
        what = f"holds no {METADATA_FILE} (not a converted folder); a PyTorch checkpoint"
        fix = "convert it (cosjax convert) and load the converted folder from there, or copy it locally"
        source = open_checkpoint(require_local(path, what, fix))
        config, experts = source.experts[0].config, tuple(e.name for e in source.experts)
        stored = source.experts[0].tensors["patch_embedding.weight"].dtype.name
    return config, experts, jnp.dtype(numpy_dtype(dtype or stored))


def _shardings(config: DiTConfig, mesh: Mesh | None):
    return None if mesh is None else param_shardings(abstract_params(config), mesh)


def _place_expert(expert, dtype, mesh: Mesh | None, allow_nonfinite: bool = False) -> dict:
    """Reads one PyTorch expert leaf by leaf, putting each on its device(s) before reading the next."""
    shardings = _shardings(expert.config, mesh)
    by_path = {}
    if shardings is not None:
        by_path = {tuple(k.key for k in p): s for p, s in jax.tree_util.tree_flatten_with_path(shardings)[0]}
    return build_tree(
        expert.leaves(dtype, allow_nonfinite), lambda path, leaf: jax.device_put(leaf, by_path.get(path))
    )


def _load_converted(
    path: AnyPath, dtype: str | None, mesh: Mesh | None, allow_nonfinite: bool = False
) -> LoadedDiT:
    _, config, _ = read_dit_metadata(path)
    meta, experts = restore_experts(path, _shardings(config, mesh), allow_nonfinite)
    stored = jnp.dtype(numpy_dtype(meta["dtype"]))
    target = jnp.dtype(numpy_dtype(dtype)) if dtype else stored
    if target != stored:
        experts = jax.tree.map(lambda a: a.astype(target), experts)
    return LoadedDiT(config, experts, meta.get("boundary"), target)

