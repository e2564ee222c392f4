"""Sampler transforms: each takes a `Sampler` and returns one, so they compose like JAX transforms.

    f = trace_x0(noise_at_step(pipe.sampler(), step=10))
    out = jax.jit(f)(cond, key)        # out.latents, out.trace.x0 [S, B, C, T, H, W]

A transform only adds an intervention (a small pytree of arrays, `cosjax.interventions.base`) to the
`Plan` the sampler consumes (interventions are data), so an index given as a traced array sweeps
without recompiling:

    run = jax.jit(lambda cond, key, s: noise_at_step(f, s)(cond, key))   # one program for all s

Indices given as Python ints are range-checked when the transform is built; a traced index out of
range is clamped and flagged in `result.index_error` (`INDEX_FLAGS`, `check_indices`; see
`cosjax.interventions.indices`). Transforms of the same kind compose (two swaps, two captures), in
the order `cosjax.plan` states. This module gathers them; each lives beside its intervention in
`cosjax/interventions/`.
"""

from __future__ import annotations

from cosjax.interventions.capture import capture
from cosjax.interventions.ensemble import default_ensemble_layers, ensemble
from cosjax.interventions.indices import INDEX_FLAGS, Index, check_indices
from cosjax.interventions.noise import noise_at_frame, noise_at_step
from cosjax.interventions.swap import swap_layer
from cosjax.interventions.x0 import X0_FIRST_FRAME, trace_x0

__all__ = [
    "INDEX_FLAGS",
    "X0_FIRST_FRAME",
    "Index",
    "capture",
    "check_indices",
    "default_ensemble_layers",
    "ensemble",
    "noise_at_frame",
    "noise_at_step",
    "swap_layer",
    "trace_x0",
]
