"""Loading a DiT: from our converted Orbax folder, or straight from a PyTorch checkpoint."""

from __future__ import annotations

import dataclasses
import functools
import json
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp

from cosjax.configs import DiTConfig
from cosjax.models.dit import WanDiT, abstract_params
from cosjax.weights.convert import FORMAT_VERSION, METADATA_FILE, load_expert_arrays, numpy_dtype
from cosjax.weights.safetensors_io import CheckpointError
from cosjax.weights.sources import open_checkpoint

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


def load_dit(path: str | Path, dtype: str | None = None, config: DiTConfig | None = None) -> LoadedDiT:
    """Loads a DiT from a converted folder (`cosjax convert`) or directly from PyTorch weights.

    Args:
      path: a folder written by `convert_checkpoint`, or any PyTorch checkpoint that
        `cosjax.weights.sources.open_checkpoint` recognises.
      dtype: parameter dtype ("float32", "bfloat16", "float16"); None keeps the stored dtype
        (for PyTorch weights, the dtype of `patch_embedding.weight`).
      config: architecture override for PyTorch checkpoints without a usable config.json.

    Returns:
      A LoadedDiT with parameters on the default device.
    """
    path = Path(path)
    if (path / METADATA_FILE).is_file():
        return _load_converted(path, dtype)
    source = open_checkpoint(path, config)
    first = source.experts[0]
    stored = first.tensors["patch_embedding.weight"].dtype
    np_dtype = numpy_dtype(dtype or stored.name)
    experts = {e.name: load_expert_arrays(e, np_dtype, place=jax.device_put) for e in source.experts}
    return LoadedDiT(first.config, experts, source.boundary, jnp.dtype(np_dtype))


def _load_converted(path: Path, dtype: str | None) -> LoadedDiT:
    from orbax.checkpoint.experimental import v1 as ocp

    meta = json.loads((path / METADATA_FILE).read_text())
    if meta.get("format") != "cosjax-dit" or meta.get("version") != FORMAT_VERSION:
        raise CheckpointError(f"{path / METADATA_FILE}: not a cosjax DiT folder of version {FORMAT_VERSION}")
    config = DiTConfig.from_dict(meta["config"])
    stored = jnp.dtype(numpy_dtype(meta["dtype"]))
    sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    abstract = jax.tree.map(
        lambda a: jax.ShapeDtypeStruct(a.shape, stored, sharding=sharding), abstract_params(config)
    )
    experts = {}
    for name in meta["experts"]:
        if not (path / name).is_dir():
            raise CheckpointError(f"{path / name}: expert folder is missing")
        experts[name] = ocp.load_pytree(path / name, abstract)
    target = jnp.dtype(numpy_dtype(dtype)) if dtype else stored
    if target != stored:
        experts = jax.tree.map(lambda a: a.astype(target), experts)
    return LoadedDiT(config, experts, meta.get("boundary"), target)
