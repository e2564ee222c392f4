"""Intervention plans: interventions are data (docs/design.md section 4).

A `Plan` is what transforms build: a tuple of interventions (`cosjax.interventions.base.Intervention`,
one small pytree each, one module each in `cosjax/interventions/`) plus `trace_x0`. The sampler and
the DiT call the plan's hooks and never name a specific intervention:

  per run:   state = plan.init(run)
  per step:  x, state = plan.before_model(x, step, key, state)        # latent edits
             v, (ys, layer_state) = dit(..., plan=plan.at_step(step))  # a `LayerPlans` view
             state = plan.after_model(state, step, ys, layer_state, run)
  at the end: records = plan.record(state)                             # -> Result.trace

Order: every EDIT intervention (noise, swap, ensemble merge, ablations) acts before any READ
(captures), so a capture sees the edited run whatever the transform order; within each phase they
act in the order the transforms were applied, outermost first (`swap_layer(swap_layer(f, 3, ...),
5, ...)` swaps layer 5's stream, then layer 3's; at the same layer and step the inner one wins).
Two interventions of the same kind compose: each keeps its own indices, state and record.
"""

from __future__ import annotations

from typing import Any

import jax
from flax import struct

from cosjax.interventions.base import EMPTY_LAYER_PLAN, Intervention, LayerPlan, LayerPlans, RunInfo

__all__ = ["EMPTY_LAYER_PLAN", "Intervention", "LayerPlan", "LayerPlans", "Plan", "RunInfo"]


@struct.dataclass
class Plan:
    """Interventions and captures over a whole sampling run. The empty Plan changes nothing.

    Attributes:
      interventions: the interventions in the order they act (see the module docstring; `add` keeps
        that order).
      trace_x0: emit x0_hat = x_s - sigma_s v at every step (static).
    """

    interventions: tuple[Intervention, ...] = ()
    trace_x0: bool = struct.field(pytree_node=False, default=False)

    def add(self, intervention: Intervention) -> Plan:
        """This plan with `intervention` acting after those already held of its phase (edits before
        reads). Transforms call it before calling the sampler they wrap, so outermost acts first."""
        ivs = self.interventions
        at = sum(1 for iv in ivs if iv.phase <= intervention.phase)
        return self.replace(interventions=(*ivs[:at], intervention, *ivs[at:]))

    def init(self, run: RunInfo) -> tuple:
        """One state per intervention (carried across steps)."""
        return tuple(iv.init(run) for iv in self.interventions)

    def before_model(
        self, x: jax.Array, step: jax.Array, key: jax.Array, state: tuple
    ) -> tuple[jax.Array, tuple]:
        """Every intervention's latent edit in order; x float32 [B, C, T, H, W], step int32 scalar."""
        states = []
        for iv, s in zip(self.interventions, state, strict=True):
            x, s = iv.before_model(x, step, key, s)
            states.append(s)
        return x, tuple(states)

    def at_step(self, step: jax.Array) -> LayerPlans:
        """The DiT's view of this plan at sampling step `step` (int32 scalar, traced)."""
        return LayerPlans(parts=tuple(iv.at_step(step) for iv in self.interventions))

    def after_model(
        self, state: tuple, step: jax.Array, ys: tuple, layer_state: tuple, run: RunInfo
    ) -> tuple:
        """Every intervention's state update from its part of the DiT's outputs of `at_step`'s view."""
        parts = zip(self.interventions, state, ys, layer_state, strict=True)
        return tuple(iv.after_model(s, step, y, ls, run) for iv, s, y, ls in parts)

    def record(self, state: tuple) -> tuple[dict[str, Any], ...]:
        """What each intervention records (name -> array), in plan order."""
        return tuple(iv.record(s) for iv, s in zip(self.interventions, state, strict=True))
