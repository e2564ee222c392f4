"""Cross-attention (text) ablation: chosen blocks at chosen steps read nothing from the prompt.

The text cross-attention output of those blocks ([rows, L, D], added ungated to the residual stream)
is zeroed, in both CFG halves, so the prompt reaches the video only through the other blocks and
steps: the test of where in depth and time the text conditions the run. Built on the generic
`LayerPlan.branch_output` hook alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
from flax import struct

from cosjax.interventions.base import Intervention, LayerPlan
from cosjax.interventions.indices import Index, flagged, mask

if TYPE_CHECKING:
    from cosjax.sampling.sampler import Sampler


@struct.dataclass
class CrossAttentionOff(LayerPlan):
    """Zeroes the cross-attention output of the blocks in `layers` (bool [num_layers]) when `on`
    (bool scalar)."""

    layers: jax.Array
    on: jax.Array

    def branch_output(self, layer, branch, out, state):
        if branch != "cross_attn":
            return out, state
        return jnp.where(self.on & self.layers[layer], jnp.zeros_like(out), out), state


@struct.dataclass
class CrossAttentionAblation(Intervention):
    """layers bool [num_layers], steps bool [S]: the blocks and sampling steps whose cross-attention
    output is zeroed."""

    layers: jax.Array
    steps: jax.Array

    def at_step(self, step):
        return CrossAttentionOff(self.layers, self.steps[step])


def ablate_cross_attention(
    f: Sampler, layers: Index | Sequence[int], steps: Index | Sequence[int] | None = None
) -> Sampler:
    """Zeroes the text cross-attention output of block(s) `layers` at step(s) `steps` (None: every
    step), for both CFG halves. Indices as in every transform: concrete ones range-checked, traced
    ones (one compiled program per sweep) clamped and flagged in `result.index_error`."""
    layer_mask, layer_flag = mask(layers, f.num_layers, "layer")
    step_mask, step_flag = (jnp.ones((f.steps,), bool), None)
    if steps is not None:
        step_mask, step_flag = mask(steps, f.steps, "step")
    ablation = CrossAttentionAblation(layer_mask, step_mask)
    return f.wrap(lambda cond, key, plan: flagged(f.fn(cond, key, plan.add(ablation)), layer_flag, step_flag))
