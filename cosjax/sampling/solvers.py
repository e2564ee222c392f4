"""Flow-matching solvers as pure state updates, with per-step coefficients computed on the host.

A solver is `init(x) -> state` and `step(state, i, x, v) -> (state, x_next, x0_hat)`, where `x` is
the sample the model saw at step i, `v` its velocity prediction and `x0_hat = x - sigma_i v`. All
schedule-dependent numbers (sigma ratios, UniPC's exponential-integrator weights) are precomputed in
float64 from the float32 sigmas and indexed by the traced step `i`, so one compiled step serves every
step of the scan.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

SOLVERS = ("euler", "unipc")


@dataclasses.dataclass(frozen=True, eq=False)
class Euler:
    """x_{i+1} = x_i + (sigma_{i+1} - sigma_i) v_i (Diffusers FlowMatchEuler, DiffSynth, VBVR).

    round_bf16: round the product and the sum to bfloat16 as DiffSynth's step on bf16 tensors does
    (`sample + model_output * (sigma_ - sigma)`, the sigma difference in float32)."""

    sigmas: np.ndarray  # float32 [N + 1]
    round_bf16: bool = False

    def init(self, x: jax.Array) -> Any:
        return ()

    def step(self, state, i, x, v):
        sig = jnp.asarray(self.sigmas)
        x, v = x.astype(jnp.float32), v.astype(jnp.float32)
        if self.round_bf16:
            bf16 = lambda a: jax.lax.reduce_precision(a, exponent_bits=8, mantissa_bits=7)  # noqa: E731
            return state, bf16(x + bf16((sig[i + 1] - sig[i]) * v)), x - sig[i] * v
        return state, x + (sig[i + 1] - sig[i]) * v, x - sig[i] * v


@struct.dataclass
class UniPCState:
    """UniPC history: the corrected previous sample and the last two x0 predictions (float32)."""

    last_sample: jax.Array
    m_prev: jax.Array
    m_prev2: jax.Array


def _unipc_coefficients(sigmas: np.ndarray) -> np.ndarray:
    """Per-step weights of UniPC bh2, order 2, predict-x0, lower order first and last.

    Row i holds (corrector at step i) A, B, C, E and (predictor i -> i+1) P, Q, R with
      x_i^c     = A x^c_{i-1} + B m_{i-1} + C (m_{i-2} - m_{i-1}) + E (m_i - m_{i-1})   (i > 0)
      x_{i+1}   = P x_i^c + Q m_i + R (m_{i-1} - m_i)
    where m_j = x_j - sigma_j v_j; alpha = 1 - sigma, lambda = log(alpha) - log(sigma).
    """
    s = sigmas.astype(np.float64)
    n = len(s) - 1
    alpha = 1.0 - s
    with np.errstate(divide="ignore"):
        lam = np.log(alpha) - np.log(s)  # lam[n] = +inf
    order = [min(2, n - i, i + 1) for i in range(n)]  # lower_order_final + warm-up: 1, 2, ..., 2, 1
    coef = np.zeros((n, 7))
    for i in range(n):
        if i > 0:  # corrector, using the order of the previous predictor
            h = lam[i] - lam[i - 1]
            phi = np.expm1(-h)
            if order[i - 1] == 1:
                rho_c = [0.5]
            else:
                r1 = (lam[i - 2] - lam[i - 1]) / h
                b1 = (phi / -h - 1) / phi
                b2 = 2 * ((phi / -h - 1) / -h - 0.5) / phi
                rho_c = np.linalg.solve(np.array([[1.0, 1.0], [r1, 1.0]]), np.array([b1, b2]))
                coef[i, 2] = -alpha[i] * phi * rho_c[0] / r1
            coef[i, 0] = s[i] / s[i - 1]
            coef[i, 1] = -alpha[i] * phi
            coef[i, 3] = -alpha[i] * phi * rho_c[-1]
        if i == n - 1 and s[n] == 0:  # final step to sigma 0: x_n = m_{n-1}
            coef[i, 4:] = (0.0, 1.0, 0.0)
            continue
        h = lam[i + 1] - lam[i]
        phi = np.expm1(-h)
        coef[i, 4] = s[i + 1] / s[i]
        coef[i, 5] = -alpha[i + 1] * phi
        if order[i] == 2:
            r1 = (lam[i - 1] - lam[i]) / h
            coef[i, 6] = -alpha[i + 1] * phi * 0.5 / r1
    return coef.astype(np.float32)


@dataclasses.dataclass(frozen=True, eq=False)
class UniPC:
    """UniPC multistep (bh2, order 2, predictor-corrector), as Wan's official sampler runs it."""

    sigmas: np.ndarray  # float32 [N + 1]

    def init(self, x: jax.Array) -> UniPCState:
        zeros = jnp.zeros(x.shape, jnp.float32)
        return UniPCState(zeros, zeros, zeros)

    def step(self, state: UniPCState, i, x, v):
        a, b, c, e, p, q, r = jnp.asarray(_unipc_coefficients(self.sigmas))[i]
        x, v = x.astype(jnp.float32), v.astype(jnp.float32)
        m = x - jnp.asarray(self.sigmas)[i] * v
        corrected = (
            a * state.last_sample
            + b * state.m_prev
            + c * (state.m_prev2 - state.m_prev)
            + e * (m - state.m_prev)
        )
        x = jnp.where(i > 0, corrected, x)
        x_next = p * x + q * m + r * (state.m_prev - m)
        return UniPCState(x, m, state.m_prev), x_next, m


def make_solver(name: str, sigmas: np.ndarray, round_bf16: bool = False):
    """'euler' or 'unipc' for the given float32 sigmas [N + 1]; `round_bf16`: DiffSynth's bf16 Euler
    step (only Euler: DiffSynth has no UniPC to match)."""
    if name == "euler":
        return Euler(sigmas, round_bf16)
    if round_bf16:
        raise ValueError(
            f"rounding='diffsynth' reproduces DiffSynth's Euler loop; solver {name!r} has no DiffSynth "
            "counterpart: use solver='euler', or rounding=None"
        )
    if name == "unipc":
        return UniPC(sigmas)
    raise ValueError(f"unknown solver {name!r}; use one of {', '.join(SOLVERS)}")
