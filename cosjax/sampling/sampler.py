"""The sampling loop: a `lax.scan` over steps per expert, CFG as one batch of 2, plans as data.

`make_sampler` returns a `Sampler`: a pure function `(cond, key, plan=None) -> Result` plus the static
facts transforms need (number of steps and layers). Everything a run depends on is an argument, so
`jax.jit(sampler)` compiles once per shape and a sweep over plans reuses that program.

A14B mixtures run two scans: the high-noise expert for the leading steps with t >= boundary * 1000,
then the low-noise expert; each with its own guidance scale. The split is fixed by the schedule.

The timestep sinusoid of every step is computed on the host in float64 from the known grid (as the
official `sinusoidal_embedding_1d`) and fed to the DiT as `t_freq`.

Reference numerics (`SamplerSettings.rounding="diffsynth"`, on by default in the "vbvr" preset; in
effect only when the DiT computes in bfloat16): DiffSynth runs VBVR's loop on bf16 tensors, so its
result depends on where it rounds. The sampler rounds to bf16 at the same points:
  * the model-input timestep (`timestep.to(torch_dtype)`: 873.494 becomes 872) and its sinusoid
    (float64 angles of the rounded t, then bf16);
  * the time MLP, the time projection and the modulation sums (`WanDiT(time_dtype=bfloat16)`, its
    bf16 weights applied to bf16 inputs);
  * the initial noise (drawn in float32, then `.to(bfloat16)`), the TI2V first-frame latent, and
    the latents between steps (they are bf16 tensors there);
  * the model output and each operation of the guidance combination v_u + s (v_c - v_u);
  * the Euler step: bf16(x + bf16(v * (sigma_next - sigma))), the sigma difference in float32.
x0_hat is still x - sigma v in float32 of those bf16 values. Inside the DiT, the residual stream,
the norms and the head stay float32 (the official runtime); DiffSynth keeps them in bf16. bf16
runs are chaotic at the rounding scale, so these two are compared with a measured floor
(`tests/test_reference_numerics.py`). In float32, or with rounding=None, nothing is rounded.

The text side of every step is the same, so before each expert's scan the sampler computes that
expert's cross-attention K/V of the (CFG-batched) prompts once (`WanDiT.encode_text`) and every step
reuses them (`cache_text_kv=False` recomputes them per step, as the plain forward does).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
from flax import struct

from cosjax.configs import DiTConfig, GuideScale
from cosjax.geometry import num_tokens
from cosjax.models.dit import WanDiT, host_timestep_embedding
from cosjax.plan import Plan, RunInfo
from cosjax.sampling.schedules import Schedule, make_schedule
from cosjax.sampling.solvers import make_solver

ROUNDINGS = (None, "diffsynth")


@struct.dataclass
class Conditioning:
    """The encoded inputs of a sampling run.

    Attributes:
      context: [B, L_txt, text_dim] prompt embeddings (L_txt <= text_len).
      negative: [B, L_neg, text_dim] negative-prompt embeddings, or None to run without CFG.
      y: [B, C_in - C, T, H, W] I2V conditioning (4 mask + 16 image-latent channels), or None.
      first_frame: [B, C, 1, H, W] TI2V image latent imposed on latent frame 0, or None.
      noise: [B, C, T, H, W] float32 initial latents, or None to draw N(0, I) from the key.
      latent_shape: (B, C, T, H, W) of the latents (static).
    """

    context: jax.Array
    negative: jax.Array | None = None
    y: jax.Array | None = None
    first_frame: jax.Array | None = None
    noise: jax.Array | None = None
    latent_shape: tuple[int, ...] = struct.field(pytree_node=False, default=())


@struct.dataclass
class Trace:
    """What a plan asked to record.

    Attributes:
      x0: float32 [S, B, C, T, H, W] x0_hat = x_s - sigma_s v (CFG-combined v) at every step, or None.
      records: one dict per plan intervention, in plan order (`cosjax.plan.Plan`), name -> array
        ({} for interventions that record nothing).

    The records by name (`capture`): `energy` float32 [S_e, K_e, B, L], the per-token L2 norm of the
    chosen layers' residual streams (conditional branch) at the chosen steps; `hidden` float32
    [S_h, K_h, 2B (B without CFG), L, D], residual streams at the chosen layers and steps. The
    properties give the one record of that name (None when none; `all(name)` when several).
    """

    x0: jax.Array | None = None
    records: tuple[dict[str, jax.Array], ...] = ()

    def all(self, name: str) -> tuple[jax.Array, ...]:
        """Every record named `name`, in plan order."""
        return tuple(r[name] for r in self.records if name in r)

    def one(self, name: str) -> jax.Array | None:
        """The record named `name`; None when no intervention records it; ValueError when several do."""
        found = self.all(name)
        if len(found) > 1:
            raise ValueError(f"{len(found)} interventions record {name!r}: use trace.all({name!r})")
        return found[0] if found else None

    @property
    def energy(self) -> jax.Array | None:
        return self.one("energy")

    @property
    def hidden(self) -> jax.Array | None:
        return self.one("hidden")


@struct.dataclass
class Result:
    """latents: float32 [B, C, T, H, W] final latents; trace: the recorded intermediates.

    index_error: int32 scalar (a leading seed axis under `ensemble`), set only when a transform got
    a traced index: the `cosjax.transforms.INDEX_FLAGS` bits of the kinds (step, latent frame, layer)
    that were out of range, 0 when none was. See `cosjax.transforms.check_indices`.
    """

    latents: jax.Array
    trace: Trace
    index_error: jax.Array | None = None


@dataclasses.dataclass(frozen=True)
class SamplerSettings:
    """How to sample: grid and solver, steps, shift, guidance per expert (a `GuideScale`; a number
    or a (low-noise, high-noise) pair is converted), boundary, and `rounding`: None (exact in the
    compute dtype) or "diffsynth" (bf16 at DiffSynth's rounding points when the DiT computes in
    bfloat16; see the module docstring)."""

    steps: int
    shift: float
    guide_scale: GuideScale
    boundary: float | None = None
    grid: str = "official"
    solver: str = "unipc"
    rounding: str | None = None

    def __post_init__(self):
        object.__setattr__(self, "guide_scale", GuideScale.of(self.guide_scale))


class Segment(NamedTuple):
    """The steps one expert runs: steps `start` .. `end - 1` with guidance scale `guide_scale`."""

    expert: str
    start: int
    end: int
    guide_scale: float


@dataclasses.dataclass(frozen=True, eq=False)
class Sampler:
    """A pure sampling function `(cond, key, plan=None) -> Result` and its static description.

    Attributes:
      fn: the function.
      config: the DiT architecture (num_layers, patch size, channels).
      schedule: the sigma grid and model timesteps.
      segments: the `Segment`s (expert, first step, end step, guidance scale) in sampling order.
    """

    fn: Callable[..., Result]
    config: DiTConfig
    schedule: Schedule
    segments: tuple[Segment, ...]

    @property
    def steps(self) -> int:
        return self.schedule.steps

    @property
    def num_layers(self) -> int:
        return self.config.num_layers

    def __call__(self, cond: Conditioning, key: jax.Array, plan: Plan | None = None) -> Result:
        return self.fn(cond, key, Plan() if plan is None else plan)

    def wrap(self, fn: Callable[..., Result]) -> Sampler:
        """The same sampler description around a new function (used by transforms)."""
        return dataclasses.replace(self, fn=fn)


def make_sampler(
    config: DiTConfig,
    experts: dict[str, Any],
    settings: SamplerSettings,
    dtype=jnp.float32,
    attention_backend: str | None = None,
    *,
    cache_text_kv: bool = True,
    fuse_qkv: bool = False,
) -> Sampler:
    """Builds the sampler of a DiT (one expert, or the "high_noise"/"low_noise" pair).

    Args:
      config: the DiT architecture.
      experts: expert name -> parameter tree ({"dit": ...} or {"high_noise": ..., "low_noise": ...}).
      settings: schedule, solver and guidance.
      dtype: compute dtype of the DiT matmuls.
      attention_backend: attention backend name (None: by platform).
      cache_text_kv: compute each expert's text embedding and cross-attention K/V once per run
        (before its step scan) instead of once per step; the same function up to float rounding.
      fuse_qkv: one fused matmul for self-attention q, k, v (see `WanDiT`).
    """
    schedule = make_schedule(settings.grid, settings.steps, settings.shift)
    reference = reference_rounding(settings, dtype)
    solver = make_solver(settings.solver, schedule.sigmas, round_bf16=reference)
    guide = settings.guide_scale
    if set(experts) == {"high_noise", "low_noise"}:
        split = schedule.high_noise_steps(settings.boundary)
        segments = (
            Segment("high_noise", 0, split, guide.high_noise),
            Segment("low_noise", split, schedule.steps, guide.low_noise),
        )
    elif len(experts) == 1:
        segments = (Segment(next(iter(experts)), 0, schedule.steps, guide.low_noise),)
    else:
        raise ValueError(f"experts must be one DiT or high_noise + low_noise, got {sorted(experts)}")
    segments = tuple(seg for seg in segments if seg.end > seg.start)
    module = WanDiT(
        config,
        dtype=dtype,
        param_dtype=dtype,
        attention_backend=attention_backend,
        fuse_qkv=fuse_qkv,
        time_dtype=jnp.bfloat16 if reference else None,
    )
    model_t, t_freq_table = _model_timesteps(schedule.timesteps, config.freq_dim, reference)
    timesteps, t_freq_table = jnp.asarray(model_t), jnp.asarray(t_freq_table)
    t_freq_zero = jnp.asarray(host_timestep_embedding(0.0, config.freq_dim), jnp.float32)
    rnd = _round_bf16 if reference else (lambda a: a)

    def sample(cond: Conditioning, key: jax.Array, plan: Plan) -> Result:
        shape = _check_conditioning(cond, config)
        b = shape[0]
        key_noise, key_plan = jax.random.split(key)
        if reference and cond.first_frame is not None:
            cond = cond.replace(first_frame=rnd(cond.first_frame.astype(jnp.float32)))
        x = cond.noise if cond.noise is not None else jax.random.normal(key_noise, shape, jnp.float32)
        x = _impose_first_frame(rnd(x.astype(jnp.float32)), cond)
        guided = cond.negative is not None  # classifier-free guidance: the DiT batch is (cond, uncond)
        context = _pad_text(cond.context, config.text_len)
        if guided:
            context = jnp.concatenate([context, _pad_text(cond.negative, config.text_len)])
        y = None if cond.y is None else (jnp.concatenate([cond.y, cond.y]) if guided else cond.y)
        first_frame_tokens = _first_frame_token_mask(shape, config) if cond.first_frame is not None else None
        tokens = num_tokens(shape, config.patch_size)
        batch = 2 * b if guided else b
        run = RunInfo(b, batch, tokens, config.dim, schedule.steps, config.num_layers, shape)
        carry = (x, solver.init(x), plan.init(run))

        def step(params, text_kv, scale, carry, i):
            x, solver_state, records = carry
            x, records = plan.before_model(x, i, jax.random.fold_in(key_plan, i), records)
            x = rnd(_impose_first_frame(x, cond))
            t = jnp.full((b,), timesteps[i])
            t_freq = jnp.broadcast_to(t_freq_table[i], (b, config.freq_dim))
            if first_frame_tokens is not None:  # TI2V: latent frame 0 is clean (t = 0)
                t = jnp.where(first_frame_tokens[None, :], 0.0, t[:, None])
                t_freq = jnp.where(first_frame_tokens[None, :, None], t_freq_zero, t_freq[:, None])
            x_in = jnp.concatenate([x, x]) if guided else x
            t_in = jnp.concatenate([t, t]) if guided else t
            t_freq = jnp.concatenate([t_freq, t_freq]) if guided else t_freq
            ctx = context if text_kv is None else None  # the cache replaces the text input
            v, (ys, state) = module.apply(
                {"params": params}, x_in, t_in, ctx, y, plan=plan.at_step(i), text_kv=text_kv, t_freq=t_freq
            )
            v = rnd(v)
            if guided:  # DiffSynth: noise_pred_nega + cfg_scale * (noise_pred_posi - noise_pred_nega)
                v = rnd(v[b:] + rnd(scale * rnd(v[:b] - v[b:])))
            solver_state, x_next, x0 = solver.step(solver_state, i, x, v)
            x_next = _impose_first_frame(x_next, cond)
            records = plan.after_model(records, i, ys, state, run)
            return (x_next, solver_state, records), (x0 if plan.trace_x0 else None)

        traces = []
        for name, start, end, scale in segments:
            params = experts[name]
            text_kv = module.encode_text(params, context) if cache_text_kv else None  # once per run
            body = lambda c, i, p=params, kv=text_kv, s=scale: step(p, kv, s, c, i)  # noqa: E731
            carry, x0 = jax.lax.scan(body, carry, jnp.arange(start, end, dtype=jnp.int32))
            traces.append(x0)
        x, _, records = carry
        x0 = jnp.concatenate(traces) if plan.trace_x0 else None
        return Result(latents=x, trace=Trace(x0=x0, records=plan.record(records)))

    return Sampler(sample, config, schedule, segments)


def reference_rounding(settings: SamplerSettings, dtype) -> bool:
    """Whether a sampler with `settings` computing in `dtype` rounds at DiffSynth's points."""
    if settings.rounding not in ROUNDINGS:
        raise ValueError(f"unknown rounding {settings.rounding!r}; use one of {ROUNDINGS}")
    return settings.rounding == "diffsynth" and jnp.dtype(dtype) == jnp.bfloat16


def _round_bf16(a: jax.Array) -> jax.Array:
    """Rounds float32 values to bfloat16 precision, keeping float32 (`reduce_precision` is never
    simplified away, unlike a convert pair under XLA's excess-precision rule)."""
    return jax.lax.reduce_precision(a, exponent_bits=8, mantissa_bits=7)


def _model_timesteps(timesteps: np.ndarray, freq_dim: int, reference: bool) -> tuple[np.ndarray, np.ndarray]:
    """What the DiT receives per step: timesteps float32 [N] and their float64 sinusoid [N, freq_dim]
    cast to float32, or under reference rounding both as DiffSynth has them (bf16 t, bf16 sinusoid)."""
    if not reference:
        return timesteps, host_timestep_embedding(timesteps, freq_dim).astype(np.float32)
    t = timesteps.astype(ml_dtypes.bfloat16).astype(np.float32)
    freq = host_timestep_embedding(t, freq_dim).astype(ml_dtypes.bfloat16).astype(np.float32)
    return t, freq


def _check_conditioning(cond: Conditioning, config: DiTConfig) -> tuple[int, ...]:
    shape = tuple(cond.latent_shape)
    if len(shape) != 5:
        raise ValueError(f"latent_shape must be (B, C, T, H, W), got {shape}")
    if shape[1] != config.out_dim:
        raise ValueError(f"latents have {shape[1]} channels; the model makes {config.out_dim}")
    if cond.noise is not None and tuple(cond.noise.shape) != shape:
        raise ValueError(f"noise has shape {tuple(cond.noise.shape)}, expected {shape}")
    if cond.first_frame is not None and tuple(cond.first_frame.shape) != (*shape[:2], 1, *shape[3:]):
        raise ValueError(f"first_frame must be [B, C, 1, H, W] = {(*shape[:2], 1, *shape[3:])}")
    for name, ctx in (("context", cond.context), ("negative", cond.negative)):
        if ctx is not None and (ctx.ndim != 3 or ctx.shape[0] != shape[0] or ctx.shape[2] != config.text_dim):
            raise ValueError(
                f"{name} must be [B, L_txt, {config.text_dim}] with B = {shape[0]} (the model's text_dim), "
                f"got {tuple(ctx.shape)}: embed it with this model's text encoder"
            )
    return shape


def _pad_text(context: jax.Array, text_len: int) -> jax.Array:
    if context.shape[1] > text_len:
        raise ValueError(f"text has {context.shape[1]} tokens; the model takes at most {text_len}")
    return jnp.pad(context, ((0, 0), (0, text_len - context.shape[1]), (0, 0)))


def _impose_first_frame(x: jax.Array, cond: Conditioning) -> jax.Array:
    if cond.first_frame is None:
        return x
    return x.at[:, :, :1].set(cond.first_frame.astype(x.dtype))


def _first_frame_token_mask(shape: tuple[int, ...], config: DiTConfig) -> np.ndarray:
    """bool [L]: the tokens of latent frame 0 (the patch grid is frame-major)."""
    pt, ph, pw = config.patch_size
    grid = (shape[2] // pt, shape[3] // ph, shape[4] // pw)
    mask = np.zeros(grid, bool)
    mask[0] = True  # patch frame 0 holds latent frame 0
    return mask.reshape(-1)
