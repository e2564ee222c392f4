"""Sampler transforms: each takes a `Sampler` and returns one, so they compose like JAX transforms.

    f = trace_x0(noise_at_step(pipe.sampler(), step=10))
    out = jax.jit(f)(cond, key)        # out.latents, out.trace.x0 [S, B, C, T, H, W]

A transform only writes fields of the `Plan` the sampler consumes (interventions are data), so an
index given as a traced array sweeps without recompiling:

    run = jax.jit(lambda cond, key, s: noise_at_step(f, s)(cond, key))   # one program for all s

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

from cosjax.geometry import num_tokens
from cosjax.parallel import axis_size, batch_axis
from cosjax.plan import Plan
from cosjax.sampling.sampler import Conditioning, Result, Sampler

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


def _indices(values: Index | Sequence[int], upper: int, what: str) -> tuple[jax.Array, jax.Array | None]:
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


def _mask(values: Index | Sequence[int], upper: int, what: str) -> tuple[jax.Array, jax.Array | None]:
    """(bool [upper] with True at the given indices, flag of `_indices`)."""
    idx, flag = _indices(values, upper, what)
    return jnp.zeros((upper,), bool).at[idx].set(True, mode="drop"), flag


def _flagged(result: Result, *flags: jax.Array | None) -> Result:
    """`result` with the flags of out-of-range traced indices OR-ed into `result.index_error`."""
    for flag in flags:
        if flag is not None:
            old = result.index_error
            result = result.replace(index_error=flag if old is None else old | flag)
    return result


def check_indices(result: Result) -> Result:
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


def _or(old: jax.Array | None, new: jax.Array) -> jax.Array:
    return new if old is None else old | new


def _unset(plan: Plan, *fields: str) -> None:
    taken = [f for f in fields if getattr(plan, f) is not None]
    if taken:
        raise ValueError(f"the plan already sets {taken}; this transform cannot be applied twice")


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

    def fn(cond: Conditioning, key, plan: Plan) -> Result:
        out = f.fn(cond, key, plan.replace(trace_x0=True))
        if first_frame == "model" or cond.first_frame is None or out.trace.x0 is None:
            return out
        clean = cond.first_frame.astype(out.trace.x0.dtype)  # [B, C, 1, H, W], every step
        x0 = out.trace.x0.at[..., :1, :, :].set(jnp.broadcast_to(clean, out.trace.x0[..., :1, :, :].shape))
        return out.replace(trace=out.trace.replace(x0=x0))

    return f.wrap(fn)


def noise_at_step(f: Sampler, step: Index | Sequence[int]) -> Sampler:
    """At step(s) `step`, replaces the latents (all frames) by fresh N(0, I) before the model call.

    Steps before `step` are untouched; the conditioning (text, I2V `y`, TI2V frame 0) is kept.
    """
    mask, flag = _mask(step, f.steps, "step")
    return f.wrap(
        lambda cond, key, plan: _flagged(
            f.fn(cond, key, plan.replace(noise_steps=_or(plan.noise_steps, mask))), flag
        )
    )


def noise_at_frame(f: Sampler, frame: Index | Sequence[int], steps: Sequence[int] | None = None) -> Sampler:
    """Replaces latent frame(s) `frame` by fresh N(0, I) before the model call at every step (or
    only at `steps`). The conditioning is untouched."""
    step_mask, step_flag = (jnp.ones((f.steps,), bool), None)
    if steps is not None:
        step_mask, step_flag = _mask(steps, f.steps, "step")

    def fn(cond: Conditioning, key, plan: Plan) -> Result:
        frames = cond.latent_shape[2]
        mask, frame_flag = _mask(frame, frames, "latent frame")
        plan = plan.replace(
            noise_frames=_or(plan.noise_frames, mask),
            noise_frame_steps=_or(plan.noise_frame_steps, step_mask),
        )
        return _flagged(f.fn(cond, key, plan), step_flag, frame_flag)

    return f.wrap(fn)


def capture(f: Sampler, layers: Sequence[int], steps: Sequence[int], what: str = "energy") -> Sampler:
    """Records activations of `layers` at `steps`.

    what="energy": `trace.energy` float32 [len(steps), len(layers), B, L], the per-token L2 norm of
      the residual stream after each chosen block (conditional CFG branch).
    what="hidden": `trace.hidden` float32 [len(steps), len(layers), 2B, L, D], the full residual
      streams (both CFG halves; B without CFG), e.g. as the source of `swap_layer`.
    Token order is the patch grid's (f * H' + h) * W' + w.
    """
    layer_idx, layer_flag = _indices(layers, f.num_layers, "layer")
    step_idx, step_flag = _indices(steps, f.steps, "step")
    if what == "energy":
        fields = ("energy_layers", "energy_steps")
    elif what == "hidden":
        fields = ("hidden_layers", "hidden_steps")
    else:
        raise ValueError(f"capture what={what!r}; use 'energy' or 'hidden'")

    def fn(cond, key, plan: Plan) -> Result:
        _unset(plan, *fields)
        result = f.fn(cond, key, plan.replace(**dict(zip(fields, (layer_idx, step_idx), strict=True))))
        return _flagged(result, layer_flag, step_flag)

    return f.wrap(fn)


def swap_layer(f: Sampler, layer: Index, step: Index | Sequence[int], source: jax.Array) -> Sampler:
    """After block `layer` at step(s) `step`, the residual stream becomes `source`.

    Args:
      layer: the block index.
      step: one step, or several.
      source: float32 [2B, L, D] for one step or [len(steps), 2B, L, D], typically
        `trace.hidden[:, k]` captured from another run (same shapes; B without CFG). Checked exactly
        against the run when it is called (batch, tokens L and width D; no broadcasting).
    """
    layer_arr, layer_flag = _indices(layer, f.num_layers, "layer")
    step_idx, step_flag = _indices(step, f.steps, "step")
    source = jnp.asarray(source, jnp.float32)
    if source.ndim == 3:
        source = source[None]
    if source.ndim != 4 or source.shape[0] != step_idx.shape[0]:
        raise ValueError(
            f"source must be [batch, L, D] or [{step_idx.shape[0]}, batch, L, D], got {source.shape}"
        )

    def fn(cond, key, plan: Plan) -> Result:
        _unset(plan, "swap_source")
        b, cfg = cond.latent_shape[0], cond.negative is not None
        tokens = num_tokens(cond.latent_shape, f.config.patch_size)
        want = (step_idx.shape[0], 2 * b if cfg else b, tokens, f.config.dim)
        if tuple(source.shape) != want:
            raise ValueError(
                f"swap source has shape {tuple(source.shape)}, but this run needs {want} = (swap steps, "
                f"{'2B with CFG' if cfg else 'B without CFG'}, tokens, dim): capture it with "
                "capture(..., what='hidden') from a run of the same batch, video size and CFG"
            )
        plan = plan.replace(swap_layer=layer_arr[0], swap_steps=step_idx, swap_source=source)
        return _flagged(f.fn(cond, key, plan), layer_flag, step_flag)

    return f.wrap(fn)


def _listed(values):
    """A traced array stays traced (flagged if out of range); anything else becomes a list."""
    return values if isinstance(values, jax.core.Tracer) else list(values)


def default_ensemble_layers(num_layers: int) -> range:
    """The paper's middle layers: 20-29 of 40, i.e. [L/2, 3L/4) for other depths (at least one)."""
    return range(num_layers // 2, max(num_layers // 2 + 1, (3 * num_layers) // 4))


def ensemble(
    f: Sampler,
    seeds: int = 3,
    layers: Sequence[int] | None = None,
    steps: Sequence[int] = (0,),
    axis_name: str = "ensemble",
) -> Sampler:
    """The training-free ensemble: `seeds` runs whose chosen layers at the chosen steps continue from
    the mean of their residual streams across seeds (`lax.pmean` over a `vmap` axis).

    Keys: called with one key, seed 0 uses that key (so seed 0 is the plain run's trajectory until
    the first merge) and seed i uses `fold_in(key, i)`; called with a key array [seeds], those keys.

    Output: the stacked per-seed results, every array with a leading seed axis [seeds, ...]. Each
    seed keeps its own latents after the merge; score seed 0 to compare against the plain sampler
    with the same key, or all of them.
    """
    if seeds < 1:
        raise ValueError(f"seeds must be >= 1, got {seeds}")
    layers = default_ensemble_layers(f.num_layers) if layers is None else layers
    layer_mask, layer_flag = _mask(_listed(layers), f.num_layers, "layer")
    step_mask, step_flag = _mask(_listed(steps), f.steps, "step")

    def fn(cond, key, plan: Plan) -> Result:
        _unset(plan, "merge_layers")
        if jnp.ndim(key) == 0:
            keys = jnp.stack([key] + [jax.random.fold_in(key, i) for i in range(1, seeds)])
        elif key.shape[0] == seeds:
            keys = key
        else:
            raise ValueError(f"ensemble of {seeds} seeds got keys of shape {key.shape}")
        plan = plan.replace(merge_layers=layer_mask, merge_steps=step_mask, merge_axis=axis_name)
        # Under a mesh, the seeds take the `data` axis (the runs inside are then not data-sharded).
        spmd = "data" if axis_size("data") > 1 else None
        with batch_axis(None if spmd else "data"):
            result = jax.vmap(lambda k: f.fn(cond, k, plan), axis_name=axis_name, spmd_axis_name=spmd)(keys)
        return _flagged(result, layer_flag, step_flag)

    return f.wrap(fn)
