"""Noise interventions: fresh N(0, I) latents at chosen steps (all frames) or at chosen latent frames.

Both draw from the step's plan key (`Intervention.before_model`): the step noise from its first
split, the frame noise from its second, so two noise interventions firing at one step draw the
same field per kind.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
from flax import struct

from cosjax.interventions.base import Intervention
from cosjax.interventions.indices import Index, flagged, mask

if TYPE_CHECKING:
    from cosjax.sampling.sampler import Sampler


@struct.dataclass
class NoiseAtStep(Intervention):
    """steps: bool [S]; at these steps the latents (all frames) become N(0, I) before the model call."""

    steps: jax.Array

    def before_model(self, x, step, key, state):
        key_step, _ = jax.random.split(key)
        return jnp.where(self.steps[step], jax.random.normal(key_step, x.shape, x.dtype), x), state


@struct.dataclass
class NoiseAtFrame(Intervention):
    """frames: bool [T], steps: bool [S]; at these steps these latent frames become N(0, I) before
    the model call."""

    frames: jax.Array
    steps: jax.Array

    def before_model(self, x, step, key, state):
        _, key_frame = jax.random.split(key)
        hit = self.frames[None, None, :, None, None] & self.steps[step]
        return jnp.where(hit, jax.random.normal(key_frame, x.shape, x.dtype), x), state


def noise_at_step(f: Sampler, step: Index | Sequence[int]) -> Sampler:
    """At step(s) `step`, replaces the latents (all frames) by fresh N(0, I) before the model call.

    Steps before `step` are untouched; the conditioning (text, I2V `y`, TI2V frame 0) is kept.
    """
    steps, flag = mask(step, f.steps, "step")
    return f.wrap(lambda cond, key, plan: flagged(f.fn(cond, key, plan.add(NoiseAtStep(steps))), flag))


def noise_at_frame(f: Sampler, frame: Index | Sequence[int], steps: Sequence[int] | None = None) -> Sampler:
    """Replaces latent frame(s) `frame` by fresh N(0, I) before the model call at every step (or
    only at `steps`). The conditioning is untouched."""
    step_mask, step_flag = (jnp.ones((f.steps,), bool), None)
    if steps is not None:
        step_mask, step_flag = mask(steps, f.steps, "step")

    def fn(cond, key, plan):
        frames, frame_flag = mask(frame, cond.latent_shape[2], "latent frame")
        result = f.fn(cond, key, plan.add(NoiseAtFrame(frames, step_mask)))
        return flagged(result, step_flag, frame_flag)

    return f.wrap(fn)
