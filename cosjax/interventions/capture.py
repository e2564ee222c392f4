"""Captures of the residual stream after chosen blocks at chosen steps: token energy or full states.

Token order is the patch grid's (f * H' + h) * W' + w. Energy keeps the conditional CFG rows (what
the paper's activation tool records); hidden states keep all rows (the source `swap_layer` needs).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
from flax import struct

from cosjax.interventions.base import READ, Intervention, LayerPlan
from cosjax.interventions.indices import flagged, indices

if TYPE_CHECKING:
    from cosjax.sampling.sampler import Sampler


@struct.dataclass
class EnergyLayers(LayerPlan):
    """Emits the per-token L2 norm of the residual stream after every block: ys["energy"] float32
    [num_layers, rows, L] once stacked by the layer scan."""

    def trim_tokens(self, ys, state, n):
        return {k: v[..., :n] for k, v in ys.items()}, state

    def after_block(self, layer, hidden, state):
        return hidden, state, {"energy": jnp.sqrt(jnp.sum(jnp.square(hidden), axis=-1))}


@struct.dataclass
class EnergyCapture(Intervention):
    """layers int32 [K_e], steps int32 [S_e] -> trace "energy" float32 [S_e, K_e, B, L] (conditional
    rows). An index moved out of range (a flagged traced one) records nothing."""

    phase = READ
    layers: jax.Array
    steps: jax.Array

    def init(self, run):
        return jnp.zeros((self.steps.shape[0], self.layers.shape[0], run.batch, run.tokens), jnp.float32)

    def at_step(self, step):
        return EnergyLayers()

    def after_model(self, state, step, ys, layer_state, run):
        hit = self.steps == step
        energy = ys["energy"][self.layers][:, : run.batch]  # [K_e, B, L], conditional branch
        updated = jax.lax.dynamic_update_index_in_dim(state, energy, jnp.argmax(hit), 0)
        return jnp.where(jnp.any(hit), updated, state)

    def record(self, state):
        return {"energy": state}


@struct.dataclass
class HiddenLayers(LayerPlan):
    """Writes the residual stream after the blocks `layers` (int32 [K]) into the layer-scan state
    (float32 [K, rows, L, D]) when `on` (bool scalar)."""

    layers: jax.Array
    on: jax.Array

    def init_state(self, hidden):
        return jnp.zeros((self.layers.shape[0], *hidden.shape), jnp.float32)

    def trim_tokens(self, ys, state, n):
        return ys, state[:, :, :n]

    def after_block(self, layer, hidden, state):
        hit = self.layers == layer
        state = jax.lax.cond(
            self.on & jnp.any(hit),
            lambda buf: jax.lax.dynamic_update_index_in_dim(buf, hidden, jnp.argmax(hit), 0),
            lambda buf: buf,
            state,
        )
        return hidden, state, {}


@struct.dataclass
class HiddenCapture(Intervention):
    """layers int32 [K_h], steps int32 [S_h] -> trace "hidden" float32 [S_h, K_h, rows, L, D]."""

    phase = READ
    layers: jax.Array
    steps: jax.Array

    def init(self, run):
        shape = (self.steps.shape[0], self.layers.shape[0], run.rows, run.tokens, run.dim)
        return jnp.zeros(shape, jnp.float32)

    def at_step(self, step):
        return HiddenLayers(self.layers, jnp.any(self.steps == step))

    def after_model(self, state, step, ys, layer_state, run):
        hit = self.steps == step
        return jax.lax.cond(
            jnp.any(hit),
            lambda buf: jax.lax.dynamic_update_index_in_dim(buf, layer_state, jnp.argmax(hit), 0),
            lambda buf: buf,
            state,
        )

    def record(self, state):
        return {"hidden": state}


CAPTURES = {"energy": EnergyCapture, "hidden": HiddenCapture}


def capture(f: Sampler, layers: Sequence[int], steps: Sequence[int], what: str = "energy") -> Sampler:
    """Records activations of `layers` at `steps`.

    what="energy": `trace.energy` float32 [len(steps), len(layers), B, L], the per-token L2 norm of
      the residual stream after each chosen block (conditional CFG branch).
    what="hidden": `trace.hidden` float32 [len(steps), len(layers), 2B, L, D], the full residual
      streams (both CFG halves; B without CFG), e.g. as the source of `swap_layer`.
    Token order is the patch grid's (f * H' + h) * W' + w. Several captures compose, each with its
    own record (`trace.all("energy")`).
    """
    layer_idx, layer_flag = indices(layers, f.num_layers, "layer")
    step_idx, step_flag = indices(steps, f.steps, "step")
    if what not in CAPTURES:
        raise ValueError(f"capture what={what!r}; use 'energy' or 'hidden'")
    intervention = CAPTURES[what](layer_idx, step_idx)
    return f.wrap(
        lambda cond, key, plan: flagged(f.fn(cond, key, plan.add(intervention)), layer_flag, step_flag)
    )
