"""One way to build a sampler from a loaded model: its dtype, the platform's attention, its mesh.

    sampler = build_sampler(loaded_dit, settings, mesh=mesh)     # mesh optional
    out = jax.jit(trace_x0(sampler))(cond, key)

`Pipeline.sampler`, both experiment subjects (`PipelineSubject`, `ToySubject`) and the toy presets
all build their sampler here, so a bfloat16 checkpoint always runs bfloat16 matmuls (float32 ones run
at HIGHEST precision, see `cosjax.models.dit`) and the attention backend is the platform's
(`cosjax.models.attention.default_backend`: XLA on CPU, cuDNN flash on GPU, splash on TPU) unless
one is named. `make_sampler` stays the low-level constructor (parameter trees and dtypes given
explicitly).

With a mesh, the experts are placed with `cosjax.parallel.param_shardings` (a no-op when they were
restored into those shardings) and the returned `MeshSampler` traces under the mesh: the model's
`constrain` calls take effect (the batch, i.e. the CFG pair, over `data`, the sequence over
`context`, heads over `tensor`), `ensemble` gives its seeds the `data` axis, and every output array
is replicated on the mesh at the end of the program, so host code (`np.asarray`, the VAE, writers)
reads whole arrays on every process without a separate gather. Inputs must not be committed to one
device (`Pipeline.condition` places its conditioning on the mesh; uncommitted arrays are fine).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from cosjax.models.attention import default_backend
from cosjax.parallel import param_shardings
from cosjax.plan import Plan
from cosjax.sampling.sampler import Conditioning, Result, Sampler, SamplerSettings, make_sampler
from cosjax.weights.loading import LoadedDiT


@dataclasses.dataclass(frozen=True, eq=False)
class MeshSampler(Sampler):
    """A `Sampler` whose program runs on `mesh` (see the module docstring); transforms keep it, since
    they rebuild samplers with `Sampler.wrap`, and only the outermost call enters the mesh.

    Attributes:
      mesh: the device mesh (axes `cosjax.parallel.AXES`).
    """

    mesh: Mesh | None = None

    def __call__(self, cond: Conditioning, key: jax.Array, plan: Plan | None = None) -> Result:
        if self.mesh is None:
            return super().__call__(cond, key, plan)
        replicated = NamedSharding(self.mesh, P())
        with jax.sharding.use_abstract_mesh(self.mesh.abstract_mesh):
            result = super().__call__(cond, key, plan)
            return jax.tree.map(lambda a: jax.lax.with_sharding_constraint(a, replicated), result)


def place_experts(experts: dict, mesh: Mesh) -> dict:
    """Each expert's parameter tree on `mesh` with `param_shardings` (already placed leaves stay)."""
    return {name: jax.device_put(p, param_shardings(p, mesh)) for name, p in experts.items()}


def build_sampler(
    dit: LoadedDiT,
    settings: SamplerSettings,
    *,
    mesh: Mesh | None = None,
    dtype=None,
    attention_backend: str | None = None,
    **options,
) -> Sampler:
    """The sampler of a loaded DiT (one expert or the A14B pair).

    Args:
      dit: the loaded model; its parameter dtype is the matmul dtype (bfloat16 checkpoint ->
        bfloat16 matmuls, float32 -> float32 at HIGHEST precision).
      settings: schedule, solver, guidance and MoE boundary.
      mesh: run on this mesh (a `MeshSampler`); None: wherever the parameters are.
      dtype: compute dtype override (None: the parameters' dtype).
      attention_backend: attention backend name (None: the platform's, `default_backend()`).
      options: further `make_sampler` keywords (`cache_text_kv`, `fuse_qkv`).

    Returns:
      a `Sampler` (a `MeshSampler` when `mesh` is given) `(cond, key, plan=None) -> Result`.
    """
    experts = dit.experts if mesh is None else place_experts(dit.experts, mesh)
    sampler = make_sampler(
        dit.config,
        experts,
        settings,
        dtype=jnp.dtype(dtype or dit.dtype),
        attention_backend=attention_backend or default_backend(),
        **options,
    )
    if mesh is None:
        return sampler
    return MeshSampler(sampler.fn, sampler.config, sampler.schedule, sampler.segments, mesh=mesh)
