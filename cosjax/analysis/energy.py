"""Activation energy: L2 norms of DiT hidden states, laid out on the latent token grid.

What `cosjax.transforms.capture` records:
  * what="energy": `trace.energy` float32 [S_e, K_e, B, L], already the per-token L2 norm over the
    channels (conditional CFG branch only) -> pass it to `to_grid`, `mean_energy`, `frame_mean_energy`,
    `frame_energy`.
  * what="hidden": `trace.hidden` float32 [S_h, K_h, 2B, L, D], full residual streams of both CFG
    halves (conditional first; B without CFG) -> `conditional_half`, then `token_energy`.

Token order is the patch grid's, as in `cosjax.models.dit.patchify`: token (f, i, j) of the grid
(F', H', W') is index (f * H' + i) * W' + j, so a plain row-major reshape of the token axis to
(F', H', W') puts every token in its place. `token_grid` gives (F', H', W') from the latent shape.

Following the paper's token tool (`reference/paper-and-vbvr.md` section 1.3):
  * token energy = L2 norm of one token's D channels (the heatmap panels);
  * mean token energy per layer = mean of token energy over the tokens (per latent frame: over that
    frame's tokens);
  * temporal energy of a latent frame = L2 norm of all that frame's features, i.e.
    sqrt(sum over the frame's H' * W' tokens of token_energy^2), so it is computable from the
    per-token energy captures as well as from full hidden states.

All functions take numpy or jax arrays and return float32 jax arrays; leading axes pass through.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp

Grid = tuple[int, int, int]


def token_grid(latent_shape: Sequence[int], patch: Sequence[int] = (1, 2, 2)) -> Grid:
    """The token grid (F', H', W') = (T / pt, H / ph, W / pw) of latents [..., T, H, W].

    Args:
      latent_shape: a latent shape ending in (T, H, W), e.g. [B, C, T, H, W].
      patch: the DiT's patch size (pt, ph, pw) (`DiTConfig.patch_size`, Wan: (1, 2, 2)).
    """
    t, h, w = (int(v) for v in latent_shape[-3:])
    pt, ph, pw = (int(v) for v in patch)
    if t % pt or h % ph or w % pw:
        raise ValueError(f"latent (T, H, W) = {(t, h, w)} is not divisible by the patch {tuple(patch)}")
    return t // pt, h // ph, w // pw


def token_energy(hidden: jax.Array) -> jax.Array:
    """Per-token L2 norm over the channels: hidden [..., L, D] -> float32 [..., L]."""
    hidden = jnp.asarray(hidden, jnp.float32)
    return jnp.sqrt(jnp.sum(jnp.square(hidden), axis=-1))


def to_grid(values: jax.Array, grid: Sequence[int]) -> jax.Array:
    """Per-token values [..., L] -> [..., F', H', W'] on the token grid (L = F' H' W')."""
    f, h, w = (int(v) for v in grid)
    values = jnp.asarray(values)
    if values.shape[-1] != f * h * w:
        raise ValueError(f"{values.shape[-1]} tokens do not fill the grid {(f, h, w)} ({f * h * w} tokens)")
    return values.reshape(*values.shape[:-1], f, h, w)


def token_energy_grid(hidden: jax.Array, grid: Sequence[int]) -> jax.Array:
    """Hidden states [..., L, D] (e.g. [K, B, L, D]) -> token energy float32 [..., F', H', W']."""
    return to_grid(token_energy(hidden), grid)


def mean_energy(energy: jax.Array) -> jax.Array:
    """Mean token energy: per-token energy [..., L] -> float32 [...] (e.g. [S_e, K_e, B]: per layer)."""
    return jnp.mean(jnp.asarray(energy, jnp.float32), axis=-1)


def frame_energy(energy: jax.Array, grid: Sequence[int]) -> jax.Array:
    """Temporal energy: per-token energy [..., L] -> float32 [..., F'], the L2 norm of each latent
    frame's features (sqrt of the sum of squared token energies over the frame's H' * W' tokens).

    For full hidden states use `frame_energy(token_energy(hidden), grid)`. On `trace.energy`
    [S_e, K_e, B, L] this gives [S_e, K_e, B, F']: for layer k and sample b, `[:, k, b]` is the
    step x frame energy map of the paper's tool.
    """
    e = to_grid(jnp.asarray(energy, jnp.float32), grid)
    return jnp.sqrt(jnp.sum(jnp.square(e), axis=(-2, -1)))


def frame_mean_energy(energy: jax.Array, grid: Sequence[int]) -> jax.Array:
    """Mean token energy per latent frame: per-token energy [..., L] -> float32 [..., F'], the mean
    over each frame's H' * W' tokens (`mean_energy` frame by frame). Not the temporal energy of
    `frame_energy`, which is an L2 norm and grows with the frame's token count."""
    return jnp.mean(to_grid(jnp.asarray(energy, jnp.float32), grid), axis=(-2, -1))


def conditional_half(hidden: jax.Array, batch_axis: int = -3) -> jax.Array:
    """The conditional CFG half of captured hidden states: [..., 2B, L, D] -> [..., B, L, D].

    The DiT runs CFG as one batch of 2B with the conditional half first (`cosjax.plan`). Only for
    captures of a run with CFG; without CFG the batch is B and holds only the conditional branch.
    """
    hidden = jnp.asarray(hidden)
    n = hidden.shape[batch_axis]
    if n % 2:
        raise ValueError(f"batch axis {batch_axis} has odd size {n}: not a CFG pair batch")
    return jax.lax.slice_in_dim(hidden, 0, n // 2, axis=batch_axis % hidden.ndim)
