"""Latent swap: after a chosen block at chosen steps the residual stream becomes a given one."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
from flax import struct

from cosjax.geometry import num_tokens
from cosjax.interventions.base import Intervention, LayerPlan
from cosjax.interventions.indices import Index, flagged, indices

if TYPE_CHECKING:
    from cosjax.sampling.sampler import Sampler


@struct.dataclass
class SwapBlock(LayerPlan):
    """After block `layer` (int32 scalar) the residual stream becomes `value` (float32 [rows, L, D])
    when `on` (bool scalar)."""

    layer: jax.Array
    on: jax.Array
    value: jax.Array

    def pad_tokens(self, n):
        return self if n == 0 else self.replace(value=jnp.pad(self.value, ((0, 0), (0, n), (0, 0))))

    def after_block(self, layer, hidden, state):
        return jnp.where(self.on & (layer == self.layer), self.value, hidden), state, {}


@struct.dataclass
class SwapLayer(Intervention):
    """layer int32 scalar; steps int32 [S_w]; source float32 [S_w, rows, L, D]: after block `layer`
    at step steps[j] the residual stream becomes source[j]."""

    layer: jax.Array
    steps: jax.Array
    source: jax.Array

    def at_step(self, step):
        hit = self.steps == step
        return SwapBlock(self.layer, jnp.any(hit), self.source[jnp.argmax(hit)])


def swap_layer(f: Sampler, layer: Index, step: Index | Sequence[int], source: jax.Array) -> Sampler:
    """After block `layer` at step(s) `step`, the residual stream becomes `source`.

    Args:
      layer: the block index.
      step: one step, or several.
      source: float32 [2B, L, D] for one step or [len(steps), 2B, L, D], typically
        `trace.hidden[:, k]` captured from another run (same shapes; B without CFG). Checked exactly
        against the run when it is called (batch, tokens L and width D; no broadcasting).
    Several swaps compose (other layers or steps; at the same layer and step the inner one wins).
    """
    layer_arr, layer_flag = indices(layer, f.num_layers, "layer")
    step_idx, step_flag = indices(step, f.steps, "step")
    source = jnp.asarray(source, jnp.float32)
    if source.ndim == 3:
        source = source[None]
    if source.ndim != 4 or source.shape[0] != step_idx.shape[0]:
        raise ValueError(
            f"source must be [batch, L, D] or [{step_idx.shape[0]}, batch, L, D], got {source.shape}"
        )

    def fn(cond, key, plan):
        b, guided = cond.latent_shape[0], cond.negative is not None
        tokens = num_tokens(cond.latent_shape, f.config.patch_size)
        want = (step_idx.shape[0], 2 * b if guided else b, tokens, f.config.dim)
        if tuple(source.shape) != want:
            raise ValueError(
                f"swap source has shape {tuple(source.shape)}, but this run needs {want} = (swap steps, "
                f"{'2B with CFG' if guided else 'B without CFG'}, tokens, dim): capture it with "
                "capture(..., what='hidden') from a run of the same batch, video size and CFG"
            )
        result = f.fn(cond, key, plan.add(SwapLayer(layer_arr[0], step_idx, source)))
        return flagged(result, layer_flag, step_flag)

    return f.wrap(fn)
