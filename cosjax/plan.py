"""Intervention plans: interventions are data (DESIGN.md section 4).

Two levels:
  * `Plan` is what users and transforms build: which steps, layers and frames to touch, replacement
    values and what to capture, as arrays. A sweep over steps, layers or frames changes only data,
    so one compiled sampler serves the whole sweep.
  * `LayerPlan` is the per-step view the sampler hands to the DiT. The DiT's scan over layers calls
    `after_block` with the traced layer index; selection is `jnp.where` / `lax.cond` on that index.

CFG: the DiT runs the conditional and unconditional halves as one batch of 2B (conditional first).
Hidden-state captures, swap sources and ensemble means act on the whole 2B batch; token-energy
captures keep the conditional half only (what the paper's activation tool records).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import struct


@struct.dataclass
class LayerPlan:
    """What happens after each DiT block at one sampling step. The empty LayerPlan changes nothing.

    Attributes:
      energy: emit the per-token L2 norm of the residual stream of every layer (scan output
        `ys["energy"]`, float32 [num_layers, batch, L]).
      hidden_layers: int32 [K]: layers whose full residual stream is written into the state buffer
        (float32 [K, batch, L, D]) when `hidden_on`.
      hidden_on: bool scalar.
      swap_layer: int32 scalar; after that block the residual stream becomes `swap_value`
        (float32 [batch, L, D]) when `swap_on`.
      swap_on: bool scalar.
      merge_layers: bool [num_layers]; after those blocks the residual stream becomes its mean over
        the vmapped axis `merge_axis` when `merge_on` (the training-free ensemble).
      merge_on: bool scalar.
      merge_axis: name of the vmapped seed axis (static).
    """

    energy: bool = struct.field(pytree_node=False, default=False)
    hidden_layers: jax.Array | None = None
    hidden_on: jax.Array | None = None
    swap_layer: jax.Array | None = None
    swap_on: jax.Array | None = None
    swap_value: jax.Array | None = None
    merge_layers: jax.Array | None = None
    merge_on: jax.Array | None = None
    merge_axis: str | None = struct.field(pytree_node=False, default=None)

    def pad_tokens(self, n: int) -> LayerPlan:
        """This plan for a token sequence padded by n tokens (context parallelism)."""
        if n == 0 or self.swap_value is None:
            return self
        return self.replace(swap_value=jnp.pad(self.swap_value, ((0, 0), (0, n), (0, 0))))

    def trim_tokens(self, ys: dict, state: Any, n: int) -> tuple[dict, Any]:
        """Drops padded tokens from the scan outputs (token axis last) and state (token axis 2)."""
        ys = {k: v[..., :n] for k, v in ys.items()}
        if self.hidden_layers is not None:
            state = state[:, :, :n]
        return ys, state

    def init_state(self, hidden: jax.Array) -> Any:
        """The scan-carried capture state for a residual stream shaped like `hidden` [batch, L, D]."""
        if self.hidden_layers is None:
            return ()
        return jnp.zeros((self.hidden_layers.shape[0], *hidden.shape), jnp.float32)

    def after_block(self, layer: jax.Array, hidden: jax.Array, state: Any) -> tuple[jax.Array, Any, dict]:
        """Applies the plan after block `layer` (int32 scalar, traced).

        Args:
          hidden: float32 [batch, L, D], the residual stream after the block.
          state: the capture state from `init_state` (carried through the layer scan).

        Returns:
          (hidden, state, ys): the residual stream, the updated state, and per-layer outputs that
          the scan stacks on a leading layer axis.
        """
        if self.swap_value is not None:
            hidden = jnp.where(self.swap_on & (layer == self.swap_layer), self.swap_value, hidden)
        if self.merge_layers is not None:
            merged = jax.lax.pmean(hidden, self.merge_axis)
            hidden = jnp.where(self.merge_on & self.merge_layers[layer], merged, hidden)
        if self.hidden_layers is not None:
            hit = self.hidden_layers == layer
            state = jax.lax.cond(
                self.hidden_on & jnp.any(hit),
                lambda buf: jax.lax.dynamic_update_index_in_dim(buf, hidden, jnp.argmax(hit), 0),
                lambda buf: buf,
                state,
            )
        ys = {"energy": jnp.sqrt(jnp.sum(jnp.square(hidden), axis=-1))} if self.energy else {}
        return hidden, state, ys


@struct.dataclass
class Plan:
    """Interventions and captures over a whole sampling run. Unset fields (None) do nothing.

    Step indices count sampling steps from 0; frame indices count latent frames; layer indices count
    DiT blocks. B is the batch of the run (the CFG pair is 2B inside the DiT).

    Attributes:
      trace_x0: emit x0_hat = x_s - sigma_s v at every step (static).
      noise_steps: bool [S]: at these steps the latents are replaced by N(0, I) before the model
        call (all frames).
      noise_frames: bool [T]: these latent frames are replaced by N(0, I) before the model call at
        every step in `noise_frame_steps`.
      noise_frame_steps: bool [S].
      energy_layers, energy_steps: int32 [K_e], [S_e]: capture per-token L2 energy of these layers
        at these steps -> trace.energy float32 [S_e, K_e, B, L].
      hidden_layers, hidden_steps: int32 [K_h], [S_h]: capture full residual streams -> trace.hidden
        float32 [S_h, K_h, 2B (B without CFG), L, D].
      swap_layer: int32 scalar; swap_steps int32 [S_w]; swap_source float32 [S_w, 2B, L, D]: after
        block `swap_layer` at step swap_steps[j] the residual stream becomes swap_source[j].
      merge_layers: bool [num_layers]; merge_steps: bool [S]; merge_axis: the vmapped seed axis name
        (static) whose mean replaces the residual stream after those layers at those steps.
    """

    trace_x0: bool = struct.field(pytree_node=False, default=False)
    noise_steps: jax.Array | None = None
    noise_frames: jax.Array | None = None
    noise_frame_steps: jax.Array | None = None
    energy_layers: jax.Array | None = None
    energy_steps: jax.Array | None = None
    hidden_layers: jax.Array | None = None
    hidden_steps: jax.Array | None = None
    swap_layer: jax.Array | None = None
    swap_steps: jax.Array | None = None
    swap_source: jax.Array | None = None
    merge_layers: jax.Array | None = None
    merge_steps: jax.Array | None = None
    merge_axis: str | None = struct.field(pytree_node=False, default=None)

    def at_step(self, step: jax.Array) -> LayerPlan:
        """The DiT's view of this plan at sampling step `step` (int32 scalar, traced)."""
        kw: dict = {"energy": self.energy_layers is not None}
        if self.hidden_layers is not None:
            kw.update(hidden_layers=self.hidden_layers, hidden_on=jnp.any(self.hidden_steps == step))
        if self.swap_source is not None:
            hit = self.swap_steps == step
            kw.update(
                swap_layer=self.swap_layer,
                swap_on=jnp.any(hit),
                swap_value=self.swap_source[jnp.argmax(hit)],
            )
        if self.merge_layers is not None:
            kw.update(
                merge_layers=self.merge_layers, merge_on=self.merge_steps[step], merge_axis=self.merge_axis
            )
        return LayerPlan(**kw)


EMPTY_LAYER_PLAN = LayerPlan()
