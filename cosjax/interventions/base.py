"""The intervention protocol: every intervention is a small pytree whose hooks default to identity.

Two levels, so the DiT never sees a whole run's data and the sampler never sees a layer:
  * `Intervention` (run level, held in `cosjax.plan.Plan`): its state buffers carried across
    sampling steps (`init`, `after_model`), a latent edit before each model call (`before_model`),
    what it records into `Result.trace` (`record`), and its per-step view for the DiT (`at_step`).
  * `LayerPlan` (step level, what `WanDiT` receives): hooks inside the DiT's layer scan, called with
    the traced layer index (`branch_output` inside a block, `after_block` after it), a capture state
    carried through the scan (`init_state`), and token padding for context parallelism
    (`pad_tokens`, `trim_tokens`).
Selection by step or layer is `jnp.where` / `lax.cond` on traced indices, so a sweep over steps,
layers or frames changes only data and one compiled program serves it.

CFG: the DiT runs the conditional and unconditional halves as one batch of 2B (conditional first);
`RunInfo.rows` is that DiT batch (2B with CFG, B without) and `RunInfo.batch` is B.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import jax
from flax import struct

EDIT, READ = 0, 1
"""`Intervention.phase`: a plan applies every EDIT (changes latents or hidden states) before any
READ (only records), each group in the order the transforms were applied, outermost first."""


@dataclasses.dataclass(frozen=True)
class RunInfo:
    """Static facts of a sampling run that interventions size their state by.

    Attributes:
      batch: B, the batch of the run.
      rows: the DiT batch: 2B with CFG (conditional rows first), B without.
      tokens: L, the DiT tokens per sample (patch grid F' * H' * W', unpadded).
      dim: D, the DiT width.
      steps: S, the number of sampling steps.
      num_layers: the number of DiT blocks.
      latent_shape: (B, C, T, H, W) of the latents.
    """

    batch: int
    rows: int
    tokens: int
    dim: int
    steps: int
    num_layers: int
    latent_shape: tuple[int, ...]


@struct.dataclass
class LayerPlan:
    """What one intervention does inside the DiT's layer scan at one sampling step; every hook is the
    identity, so `LayerPlan()` changes nothing. Subclass it (as a `flax.struct.dataclass`) and
    override the hooks you need.

    Shapes: the residual stream `hidden` is float32 [rows, L_pad, D], L_pad the token count padded for
    the `context` mesh axis (`pad_tokens`); `layer` is the traced int32 scalar block index.
    """

    def pad_tokens(self, n: int) -> LayerPlan:
        """This view for a token sequence padded by n tokens (pad your own token-shaped arrays)."""
        return self

    def trim_tokens(self, ys: Any, state: Any, n: int) -> tuple[Any, Any]:
        """Drops the padded tokens (keeps the first n) from your stacked scan outputs and final state."""
        return ys, state

    def init_state(self, hidden: jax.Array) -> Any:
        """The state carried through the layer scan, for a residual stream shaped like `hidden`."""
        return ()

    def branch_output(
        self, layer: jax.Array, branch: str, out: jax.Array, state: Any
    ) -> tuple[jax.Array, Any]:
        """Edits one residual branch of block `layer` before it is added to the residual stream.

        branch (static): "self_attn" (the attention output before its gate), "cross_attn" (the
        text cross-attention output, added ungated) or "ffn" (before its gate); out: [rows, L_pad, D]
        in the compute dtype. Returns (out, state).
        """
        return out, state

    def after_block(self, layer: jax.Array, hidden: jax.Array, state: Any) -> tuple[jax.Array, Any, Any]:
        """Applies the view after block `layer`: returns (hidden, state, ys), ys the per-layer outputs
        the scan stacks on a leading layer axis (a dict of arrays, {} for none)."""
        return hidden, state, {}


@struct.dataclass
class LayerPlans(LayerPlan):
    """Several views applied in order at every hook; state and ys are tuples, one entry per part."""

    parts: tuple[LayerPlan, ...] = ()

    def pad_tokens(self, n: int) -> LayerPlans:
        return self.replace(parts=tuple(p.pad_tokens(n) for p in self.parts))

    def trim_tokens(self, ys, state, n):
        trimmed = [p.trim_tokens(y, s, n) for p, y, s in zip(self.parts, ys, state, strict=True)]
        return tuple(y for y, _ in trimmed), tuple(s for _, s in trimmed)

    def init_state(self, hidden):
        return tuple(p.init_state(hidden) for p in self.parts)

    def branch_output(self, layer, branch, out, state):
        states = []
        for p, s in zip(self.parts, state, strict=True):
            out, s = p.branch_output(layer, branch, out, s)
            states.append(s)
        return out, tuple(states)

    def after_block(self, layer, hidden, state):
        states, ys = [], []
        for p, s in zip(self.parts, state, strict=True):
            hidden, s, y = p.after_block(layer, hidden, s)
            states.append(s)
            ys.append(y)
        return hidden, tuple(states), tuple(ys)


EMPTY_LAYER_PLAN = LayerPlan()


@struct.dataclass
class Intervention:
    """One intervention or capture over a whole sampling run; every hook is the identity.

    Subclass it as a `flax.struct.dataclass` whose array fields say which steps, layers or frames it
    touches (traced or concrete: a sweep is new data, not a recompile) and override the hooks you
    need. `phase` (class attribute) is EDIT or READ; see `cosjax.plan.Plan` for the order.
    """

    phase: ClassVar[int] = EDIT

    def init(self, run: RunInfo) -> Any:
        """The state carried across sampling steps (e.g. a zeroed record buffer)."""
        return ()

    def before_model(
        self, x: jax.Array, step: jax.Array, key: jax.Array, state: Any
    ) -> tuple[jax.Array, Any]:
        """Edits the latents x (float32 [B, C, T, H, W]) before the model call at `step` (int32
        scalar, traced). key: this step's plan key, the same for every intervention (derive your
        own from it). Returns (x, state); the conditioning (TI2V frame 0) is imposed afterwards."""
        return x, state

    def at_step(self, step: jax.Array) -> LayerPlan:
        """The DiT's view of this intervention at sampling step `step` (int32 scalar, traced)."""
        return EMPTY_LAYER_PLAN

    def after_model(self, state: Any, step: jax.Array, ys: Any, layer_state: Any, run: RunInfo) -> Any:
        """Updates the state after the model call at `step`, from this intervention's view's stacked
        per-layer outputs ys (leading layer axis, tokens trimmed) and final layer-scan state."""
        return state

    def record(self, state: Any) -> dict[str, jax.Array]:
        """What this intervention adds to `Result.trace` (name -> array), from its final state."""
        return {}
