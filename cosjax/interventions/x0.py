"""x0 tracing: the sampler records x0_hat = x_s - sigma_s v at every step (a `Plan` flag, since the
solver computes it)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import jax.numpy as jnp

if TYPE_CHECKING:
    from cosjax.sampling.sampler import Sampler

X0_FIRST_FRAME = ("model", "clean")


def trace_x0(f: Sampler, first_frame: str = "model") -> Sampler:
    """Records x0_hat = x_s - sigma_s v at every step: `result.trace.x0` float32 [S, B, C, T, H, W].

    first_frame: what latent frame 0 of a TI2V x0_hat holds. "model": x_s - sigma_s v there too
    (the model's prediction on the clean, t = 0 frame); "clean": the conditioning image latent
    (`cond.first_frame`), as the paper's x0-hat tool (`tools/step_visualization.py`) writes it. Runs
    without `cond.first_frame` (T2V, I2V) are the same either way.
    """
    if first_frame not in X0_FIRST_FRAME:
        raise ValueError(f"trace_x0 first_frame={first_frame!r}; use one of {', '.join(X0_FIRST_FRAME)}")

    def fn(cond, key, plan):
        out = f.fn(cond, key, plan.replace(trace_x0=True))
        if first_frame == "model" or cond.first_frame is None or out.trace.x0 is None:
            return out
        clean = cond.first_frame.astype(out.trace.x0.dtype)  # [B, C, 1, H, W], every step
        x0 = out.trace.x0.at[..., :1, :, :].set(jnp.broadcast_to(clean, out.trace.x0[..., :1, :, :].shape))
        return out.replace(trace=out.trace.replace(x0=x0))

    return f.wrap(fn)
