"""Sigma grids of the flow-matching samplers (x_s = (1 - s) x0 + s eps), built on the host.

Three grids are in use for Wan models (`wan22.md` 5.2 and 5.5, `paper-and-vbvr.md` 1.3):
  * `official`: Wan's FlowUniPCMultistepScheduler: linspace(0.999, 0, N+1)[:N], shifted, model
    timesteps truncated to integers;
  * `diffsynth`: the DiffSynth / VBVR-Wan2.2 / paper grid: linspace(1, 0, N+1)[:N], shifted,
    model timestep = 1000 * sigma (not truncated);
  * `diffusers`: Diffusers' UniPC with flow sigmas: linspace(1, 1/1000, N+1)[:N], shifted, first
    sigma lowered by 1e-6 when it is 1, integer timesteps.
The shift is s' = shift * s / (1 + (shift - 1) * s) everywhere.
"""

from __future__ import annotations

import dataclasses

import numpy as np

NUM_TRAIN_TIMESTEPS = 1000
GRIDS = ("official", "diffsynth", "diffusers")


@dataclasses.dataclass(frozen=True, eq=False)
class Schedule:
    """A sampling schedule.

    Attributes:
      sigmas: float32 [N + 1], decreasing, sigmas[N] = 0.
      timesteps: float32 [N], what the DiT receives at each step (in [0, 1000]).
    """

    sigmas: np.ndarray
    timesteps: np.ndarray

    @property
    def steps(self) -> int:
        return len(self.timesteps)

    def high_noise_steps(self, boundary: float | None) -> int:
        """How many leading steps run the high-noise expert (t >= boundary * 1000)."""
        if boundary is None:
            return self.steps
        return int(np.sum(self.timesteps >= boundary * NUM_TRAIN_TIMESTEPS))


def _shift(sigmas: np.ndarray, shift: float) -> np.ndarray:
    return shift * sigmas / (1 + (shift - 1) * sigmas)


def make_schedule(grid: str, steps: int, shift: float) -> Schedule:
    """The schedule of `grid` ("official", "diffsynth" or "diffusers") with `steps` steps."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if grid == "official":
        sigma_max = float(np.float32(1.0 - 1.0 / NUM_TRAIN_TIMESTEPS))  # 0.99900001 as stored in float32
        sigmas = _shift(np.linspace(sigma_max, 0.0, steps + 1)[:-1], shift)
        timesteps = np.trunc(sigmas * NUM_TRAIN_TIMESTEPS)
    elif grid == "diffsynth":
        sigmas = _shift(np.linspace(1.0, 0.0, steps + 1)[:-1], shift)
        timesteps = sigmas * NUM_TRAIN_TIMESTEPS
    elif grid == "diffusers":
        sigmas = _shift(np.linspace(1.0, 1.0 / NUM_TRAIN_TIMESTEPS, steps + 1)[:-1], shift)
        if abs(sigmas[0] - 1.0) < 1e-6:
            sigmas[0] -= 1e-6
        timesteps = np.trunc(sigmas * NUM_TRAIN_TIMESTEPS)
    else:
        raise ValueError(f"unknown sigma grid {grid!r}; use one of {', '.join(GRIDS)}")
    return Schedule(sigmas=np.append(sigmas, 0.0).astype(np.float32), timesteps=timesteps.astype(np.float32))
