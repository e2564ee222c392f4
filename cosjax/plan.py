"""The intervention plan: data consumed inside the DiT's scan over layers.

Interventions are data, not code (DESIGN.md section 4): a `Plan` is a pytree whose arrays say which
layers and steps to touch; the scan body applies it with `jnp.where`-style selection on the traced
layer index, so a sweep over layers reuses one compiled program. This module holds the seam the DiT
calls; the transforms of the sampler issue fill it with fields.
"""

from __future__ import annotations

import jax
from flax import struct


@struct.dataclass
class Plan:
    """An intervention plan. The empty plan (no fields) leaves the model's function unchanged."""

    def after_block(self, layer: jax.Array, hidden: jax.Array) -> tuple[jax.Array, dict]:
        """Applied to the residual stream after block `layer`.

        Args:
          layer: int32 scalar, the index of the block that just ran (traced inside the scan).
          hidden: float32 [B, L, D], the residual stream after that block.

        Returns:
          (hidden, captures): the possibly modified residual stream and a dict of per-layer
          captures (stacked over layers by the scan). Empty for the empty plan.
        """
        del layer
        return hidden, {}


EMPTY = Plan()
