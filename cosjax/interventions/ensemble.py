"""The training-free ensemble: seeds whose chosen layers at chosen steps continue from their mean."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
from flax import struct

from cosjax.interventions.base import Intervention, LayerPlan
from cosjax.interventions.indices import flagged, listed, mask
from cosjax.parallel import axis_size, batch_axis

if TYPE_CHECKING:
    from cosjax.sampling.sampler import Sampler


@struct.dataclass
class MergeBlocks(LayerPlan):
    """After the blocks in `layers` (bool [num_layers]) the residual stream becomes its mean over the
    vmapped axis `axis` (static name) when `on` (bool scalar)."""

    layers: jax.Array
    on: jax.Array
    axis: str = struct.field(pytree_node=False, default="ensemble")

    def after_block(self, layer, hidden, state):
        merged = jax.lax.pmean(hidden, self.axis)
        return jnp.where(self.on & self.layers[layer], merged, hidden), state, {}


@struct.dataclass
class MergeSeeds(Intervention):
    """layers bool [num_layers], steps bool [S]; axis: the vmapped seed axis name (static)."""

    layers: jax.Array
    steps: jax.Array
    axis: str = struct.field(pytree_node=False, default="ensemble")

    def at_step(self, step):
        return MergeBlocks(self.layers, self.steps[step], self.axis)


def default_ensemble_layers(num_layers: int) -> range:
    """The paper's middle layers: 20-29 of 40, i.e. [L/2, 3L/4) for other depths (at least one)."""
    return range(num_layers // 2, max(num_layers // 2 + 1, (3 * num_layers) // 4))


def ensemble(
    f: Sampler,
    seeds: int = 3,
    layers: Sequence[int] | None = None,
    steps: Sequence[int] = (0,),
    axis_name: str = "ensemble",
) -> Sampler:
    """The training-free ensemble: `seeds` runs whose chosen layers at the chosen steps continue from
    the mean of their residual streams across seeds (`lax.pmean` over a `vmap` axis).

    Keys: called with one key, seed 0 uses that key (so seed 0 is the plain run's trajectory until
    the first merge) and seed i uses `fold_in(key, i)`; called with a key array [seeds], those keys.

    Output: the stacked per-seed results, every array with a leading seed axis [seeds, ...]. Each
    seed keeps its own latents after the merge; score seed 0 to compare against the plain sampler
    with the same key, or all of them. Two ensembles nest (give them different `axis_name`s).
    """
    if seeds < 1:
        raise ValueError(f"seeds must be >= 1, got {seeds}")
    layers = default_ensemble_layers(f.num_layers) if layers is None else layers
    layer_mask, layer_flag = mask(listed(layers), f.num_layers, "layer")
    step_mask, step_flag = mask(listed(steps), f.steps, "step")

    def fn(cond, key, plan):
        if jnp.ndim(key) == 0:
            keys = jnp.stack([key] + [jax.random.fold_in(key, i) for i in range(1, seeds)])
        elif key.shape[0] == seeds:
            keys = key
        else:
            raise ValueError(f"ensemble of {seeds} seeds got keys of shape {key.shape}")
        plan = plan.add(MergeSeeds(layer_mask, step_mask, axis_name))
        # Under a mesh, the seeds take the `data` axis (the runs inside are then not data-sharded).
        spmd = "data" if axis_size("data") > 1 else None
        with batch_axis(None if spmd else "data"):
            result = jax.vmap(lambda k: f.fn(cond, k, plan), axis_name=axis_name, spmd_axis_name=spmd)(keys)
        return flagged(result, layer_flag, step_flag)

    return f.wrap(fn)
