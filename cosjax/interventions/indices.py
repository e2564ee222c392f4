"""Index handling shared by the transforms: concrete indices are range-checked, traced ones flagged.

Indices given as Python ints are range-checked when the transform is built (frames when the
sampler is called, since the frame count comes with the conditioning) and raise a ValueError.

A traced index (a sweep under `jax.jit`) cannot be checked in Python, so it is clamped and flagged
instead: an index outside 0..n-1 (negative ones included, which never wrap) is moved out of reach,
so the intervention or capture it names does nothing, and `result.index_error` gets the bit of its
kind (`INDEX_FLAGS`); `check_indices(result)` raises on the host naming the kinds. We do not use
`checkify` here: a `checkify.check` inside `jax.jit` fails to trace unless every caller wraps the
program in `checkify.checkify`, which would break the plain `jax.jit(f)` every example uses; the flag
costs one comparison and travels through `jit`, `vmap` and `scan` like any other output.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

Index = int | jax.Array
INDEX_FLAGS = {"step": 1, "latent frame": 2, "layer": 4}


def _check(values, upper: int, what: str) -> None:
    """Range-checks concrete indices (ints, lists, numpy); traced values pass through."""
    if isinstance(values, jax.core.Tracer):
        return
    arr = np.asarray(values)
    if arr.size == 0:
        raise ValueError(f"no {what} index given")
    if arr.dtype.kind not in "iu":
        raise ValueError(f"{what} index must be an integer, got {values!r}")
    if arr.min() < 0 or arr.max() >= upper:
        raise ValueError(
            f"{what} index {values!r} out of range: the sampler has {upper} {what}s (0..{upper - 1})"
        )


def indices(values: Index | Sequence[int], upper: int, what: str) -> tuple[jax.Array, jax.Array | None]:
    """(int32 [n] indices, flag): concrete values are range-checked (ValueError) and get flag None;
    traced ones outside 0..upper-1 are moved to `upper` (matching no step, layer or frame, never
    wrapping) and the flag is the int32 `INDEX_FLAGS[what]` bit when any was out of range, else 0."""
    _check(values, upper, what)
    idx = jnp.atleast_1d(jnp.asarray(values, jnp.int32))
    if not isinstance(values, jax.core.Tracer):
        return idx, None
    bad = (idx < 0) | (idx >= upper)
    flag = jnp.where(jnp.any(bad), jnp.int32(INDEX_FLAGS[what]), jnp.int32(0))
    return jnp.where(bad, upper, idx), flag


def mask(values: Index | Sequence[int], upper: int, what: str) -> tuple[jax.Array, jax.Array | None]:
    """(bool [upper] with True at the given indices, flag of `indices`)."""
    idx, flag = indices(values, upper, what)
    return jnp.zeros((upper,), bool).at[idx].set(True, mode="drop"), flag


def listed(values):
    """A traced array stays traced (flagged if out of range); anything else becomes a list."""
    return values if isinstance(values, jax.core.Tracer) else list(values)


def flagged(result, *flags: jax.Array | None):
    """`result` (a `Result`) with the flags of out-of-range traced indices OR-ed into its
    `index_error`."""
    for flag in flags:
        if flag is not None:
            old = result.index_error
            result = result.replace(index_error=flag if old is None else old | flag)
    return result


def check_indices(result):
    """Raises IndexError on the host when a traced index given to a transform was out of range.

    Call it on a result of a sampler built with traced indices (`jax.jit(lambda c, k, s:
    noise_at_step(f, s)(c, k))`); the out-of-range intervention did nothing. Returns `result`.
    """
    if result.index_error is None:
        return result
    bits = int(np.bitwise_or.reduce(np.asarray(result.index_error).reshape(-1)))
    kinds = [name for name, bit in INDEX_FLAGS.items() if bits & bit]
    if kinds:
        raise IndexError(
            f"a traced {' and '.join(kinds)} index given to a transform was out of range (negative or "
            "past the sampler's count); that intervention did nothing: pass indices in 0..n-1"
        )
    return result
