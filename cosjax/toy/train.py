"""Flow-matching training of a tiny Wan-architecture I2V model on pixel-derived latents (no VAE).

This trains the embedded toy model of `docs/design.md` section 7: same `WanDiT` code as the real
checkpoints, tiny config, optax, Orbax checkpoints, TensorBoard logging, exact resumption.

The latent codec it trains in is `cosjax.toy.codec`, the folder it exports `cosjax.toy.model_file`.

Loss: rectified flow matching as Wan: x_s = (1 - s) x0 + s eps, target v = eps - x0, the DiT gets
t = 1000 s; elements where x0 != 0 weigh `change_weight` (in the last `final_steps` steps
`final_change_weight`; see `change_weight_at`). s is
"shifted uniform" by default: u ~ U(0, 1), s = shift u / (1 + (shift - 1) u), the same shift map as
the sampler's sigma grids (`cosjax.sampling.schedules`), shift 3 by default (more weight on high
noise, where the toy's content -- where the object goes -- is decided; the shipped recipe uses 4);
sample with the same shift. `time_sampling="logit_normal"` draws u = sigmoid(N(0, 1)) (SD3) before
the shift. The MSE covers all frames, frame 0 included (the sampler denoises frame 0 too; the model learns to
copy it from y).

CFG: the prompt is dropped (context set to zeros) with probability `p_uncond` (0.1) per example;
the image conditioning y is kept, as in Wan's I2V where the negative branch shares y. At sampling
time pass `negative = zeros` (see `toy_conditioning`).

Initialisation: `init_params` then the head kernel zeroed (as the official `init_weights`), so the
first prediction is v = 0 and the initial loss is E|eps - x0|^2.

Determinism and resumption: the batch of step k is the slice [k B, (k + 1) B) of the concatenation
of per-epoch permutations `default_rng([seed, epoch]).permutation(N)`; noise, timesteps and prompt
dropout come from `fold_in(key(seed), k)`. A run restarted from a checkpoint at step k therefore
replays exactly what the uninterrupted run would have done.

Workdir layout: `train_config.json` (resolved config + data fingerprint), `prompt_embeddings.npy`,
`checkpoints/<step>/` (Orbax `CheckpointManager`, max_to_keep 2; params, EMA, optimiser state,
step), `tb/` (TensorBoard: train/loss, train/lr, train/grad_norm, train/steps_per_sec).

Single process only (the toy trains on one host); logging is process-0 safe through `Writer`.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import shutil
import time
import zlib
from pathlib import Path
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from cosjax.configs import DiTConfig
from cosjax.models.dit import WanDiT, init_params
from cosjax.parallel import is_main_process
from cosjax.paths import check_destination, staged_file, write_atomic
from cosjax.toy.codec import encode_videos, i2v_condition, latent_frames, prompt_embeddings
from cosjax.toy.config import check_toy_dit, toy_dit_config
from cosjax.toy.model_file import TOY_FILE, local_folder, save_toy

Params = Any


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything a training run depends on (besides the data).

    Attributes:
      model: the DiT (see `toy_dit_config`; in_dim 10, out_dim 3, "i2v").
      steps: total optimiser steps (also the length of the cosine schedule).
      batch_size: examples per step.
      lr: peak learning rate (AdamW).
      warmup: linear warmup steps from 0 to `lr`, then cosine decay to `lr * min_lr_ratio`.
      min_lr_ratio: final learning rate as a fraction of `lr`.
      weight_decay: AdamW decoupled weight decay, on Dense kernels only.
      b1, b2: Adam moments.
      grad_clip: global-norm gradient clipping threshold.
      ema_decay: EMA decay, warmed up as min(ema_decay, (1 + k) / (10 + k)) at step k.
      seed: seeds init, prompt embeddings, data order, noise, timesteps and dropout.
      p_uncond: probability of dropping the prompt (zeros context) for CFG.
      time_sampling: "uniform" or "logit_normal" base distribution of u in (0, 1).
      time_shift: s = shift u / (1 + (shift - 1) u); 1 = no shift.
      space: "delta" (default) models (video - first frame) / 2, "pixel" the video itself; see
        `encode_videos`.
      pool: spatial average-pooling factor of the latents (1 = full resolution; see `encode_videos`).
      stride: temporal stride of the latents: keyframes 0, stride, 2 stride, ... (see `encode_videos`).
      scale: the latents are multiplied by this (see `encode_videos`).
      change_weight: loss weight of latent elements where the target x0 is non-zero (in the delta
        space: what the video changes), relative to 1 elsewhere; see `flow_matching_loss`.
      final_change_weight: the change weight of the last `final_steps` steps (None: `change_weight`
        throughout); see `change_weight_at`.
      final_steps: how many of the last steps use `final_change_weight`.
      num_prompts: size of the prompt-embedding table; None = max(prompt_ids) + 1.
      checkpoint_every: save an Orbax checkpoint every this many steps (and at the end).
      log_every: TensorBoard / progress-bar interval in steps.
    """

    model: DiTConfig = dataclasses.field(default_factory=toy_dit_config)
    steps: int = 2000
    batch_size: int = 8
    lr: float = 3e-4
    warmup: int = 100
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.01
    b1: float = 0.9
    b2: float = 0.999
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    seed: int = 0
    p_uncond: float = 0.1
    time_sampling: Literal["uniform", "logit_normal"] = "uniform"
    time_shift: float = 3.0
    space: Literal["pixel", "delta"] = "delta"
    pool: int = 1
    stride: int = 1
    scale: float = 1.0
    change_weight: float = 1.0
    final_change_weight: float | None = None
    final_steps: int = 0
    num_prompts: int | None = None
    checkpoint_every: int = 500
    log_every: int = 10

    def __post_init__(self):
        check_toy_dit(self.model)
        if self.space not in ("pixel", "delta"):
            raise ValueError(f"space must be 'pixel' or 'delta', got {self.space!r}")
        if self.pool < 1 or self.stride < 1 or not self.scale > 0:
            raise ValueError(
                f"pool and stride must be >= 1 and scale > 0, got {self.pool}, {self.stride}, {self.scale}"
            )
        if self.time_sampling not in ("uniform", "logit_normal"):
            raise ValueError(f"time_sampling must be 'uniform' or 'logit_normal', got {self.time_sampling!r}")
        if self.steps < 1 or self.batch_size < 1 or self.checkpoint_every < 1 or self.log_every < 1:
            raise ValueError("steps, batch_size, checkpoint_every and log_every must be >= 1")
        if not 0 <= self.warmup < self.steps:
            raise ValueError(f"warmup must be in [0, steps), got {self.warmup}")
        if not 0 <= self.final_steps <= self.steps or (self.final_steps > 0) != (
            self.final_change_weight is not None
        ):
            raise ValueError(
                f"final_steps must be in [0, steps] and given (> 0) exactly when final_change_weight is, "
                f"got final_steps {self.final_steps}, final_change_weight {self.final_change_weight}"
            )

    @property
    def latent(self) -> dict:
        """The latent space as `encode_videos` / `decode_latents` / `save_toy` keywords."""
        return {"space": self.space, "pool": self.pool, "stride": self.stride, "scale": self.scale}

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        d = dict(d)
        d["model"] = DiTConfig.from_dict(d["model"])
        return cls(**d)


@struct.dataclass
class TrainState:
    """step: int32 [] completed steps; params / ema: DiT parameter trees; opt_state: optax state."""

    step: jax.Array
    params: Params
    ema: Params
    opt_state: Any


@dataclasses.dataclass
class TrainResult:
    """What `train` returns.

    Attributes:
      state: the final TrainState (on device).
      losses: float32 [n] loss of each step run by this call (steps `first_step` .. `first_step+n-1`).
      first_step: index of the first step run by this call (the resumed-from step).
      steps_per_sec: throughput of this call, excluding the first step (compilation); nan if < 2 steps.
    """

    state: TrainState
    losses: np.ndarray
    first_step: int
    steps_per_sec: float


def sample_sigmas(key: jax.Array, batch: int, config: TrainConfig) -> jax.Array:
    """Training noise levels s, float32 [batch] in (0, 1): shifted uniform or logit-normal."""
    if config.time_sampling == "uniform":
        u = jax.random.uniform(key, (batch,), jnp.float32)
    else:
        u = jax.nn.sigmoid(jax.random.normal(key, (batch,), jnp.float32))
    shift = config.time_shift
    return shift * u / (1.0 + (shift - 1.0) * u)


def batch_indices(seed: int, step: int, num_examples: int, batch_size: int) -> np.ndarray:
    """int64 [batch_size]: the examples of step `step`, a slice of per-epoch seeded permutations."""
    out, pos = [], step * batch_size
    while len(out) < batch_size:
        epoch, offset = divmod(pos, num_examples)
        take = _permutation(seed, epoch, num_examples)[offset : offset + batch_size - len(out)]
        out.extend(take.tolist())
        pos += len(take)
    return np.asarray(out, np.int64)


@functools.lru_cache(maxsize=4)
def _permutation(seed: int, epoch: int, n: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch]).permutation(n)


# ----------------------------------------------------------------------------------------------
# Optimiser, state, step


def lr_schedule(config: TrainConfig) -> optax.Schedule:
    """Linear warmup 0 -> lr over `warmup` steps, cosine decay to lr * min_lr_ratio at `steps`."""
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0 if config.warmup else config.lr,
        peak_value=config.lr,
        warmup_steps=config.warmup,
        decay_steps=config.steps,
        end_value=config.lr * config.min_lr_ratio,
    )


def make_optimizer(config: TrainConfig) -> optax.GradientTransformation:
    """Global-norm clipping then AdamW (decay on Dense kernels only) on the warmup-cosine schedule."""

    def decay_mask(params):
        return jax.tree_util.tree_map_with_path(lambda path, _: path[-1].key == "kernel", params)

    return optax.chain(
        optax.clip_by_global_norm(config.grad_clip),
        optax.adamw(
            lr_schedule(config),
            b1=config.b1,
            b2=config.b2,
            weight_decay=config.weight_decay,
            mask=decay_mask,
        ),
    )


def init_state(config: TrainConfig) -> TrainState:
    """Step 0: `init_params(seed)` with the head kernel zeroed; EMA = params; fresh optimiser."""
    return _init_state_fn(config)()


@functools.lru_cache(maxsize=4)
def _init_state_fn(config: TrainConfig):
    return jax.jit(functools.partial(_init_state, config))


def _init_state(config: TrainConfig) -> TrainState:
    params = init_params(config.model, jax.random.fold_in(jax.random.key(config.seed), 0))
    params = dict(params, head=dict(params["head"], kernel=jnp.zeros_like(params["head"]["kernel"])))
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        ema=jax.tree.map(jnp.copy, params),
        opt_state=make_optimizer(config).init(params),
    )


def change_weight_at(config: TrainConfig, step) -> jax.Array:
    """float32 []: the change weight of step `step` (int or int32 []): `change_weight`, then
    `final_change_weight` for the last `final_steps` steps.

    Why two phases: the weighted loss's optimum is biased, x0-hat = E[w x0 | x_s] / E[w | x_s], so a
    cell drawn in a fraction p of the plausible answers is predicted as drawn with weight
    w p / (w p + 1 - p) (p = 0.1 reads as 0.53 at w = 10). Sampled, the inflated guesses get drawn at
    mid noise and then kept: mazes flooded, two routes drawn. The large weight makes the answer
    learnable early; a final phase at weight 1 removes the bias from the trained model.
    """
    if config.final_change_weight is None:
        return jnp.float32(config.change_weight)
    final = jnp.asarray(step) >= config.steps - config.final_steps
    return jnp.where(final, jnp.float32(config.final_change_weight), jnp.float32(config.change_weight))


def flow_matching_loss(
    params, module: WanDiT, config: TrainConfig, key, videos, first_frames, context, change_weight=None
):
    """Rectified-flow loss of one batch.

    Args:
      params: DiT parameters.
      module: the WanDiT.
      config: training config (time sampling, CFG dropout).
      key: PRNG key of this step.
      videos: uint8 [B, F, H, W, 3]; first_frames: uint8 [B, H, W, 3].
      context: float32 [B, L_txt, text_dim] prompt embeddings (before dropout).
      change_weight: float or float32 [] weight of the changed elements (None: config.change_weight;
        the training step passes `change_weight_at(config, step)`).

    Returns:
      float32 scalar: mean over all elements of w (v_pred - (eps - x0))^2, w = change_weight where
      x0 != 0, else 1. Why a weight: in the delta space 2-16 % of the elements change, and at high noise
      (where the model must infer the answer from the first frame alone) their error is all the
      signal the task gives; unweighted it drowns in the noise-reproduction error of the static rest.
      The weight tilts an uncertain prediction towards "something changes here", which sampling
      then sharpens; 1 restores the plain rectified-flow loss.
    """
    key_noise, key_time, key_drop = jax.random.split(key, 3)
    x0 = encode_videos(videos, **config.latent)
    b, f = x0.shape[0], x0.shape[2]
    y = i2v_condition(first_frames, f, config.pool)
    eps = jax.random.normal(key_noise, x0.shape, jnp.float32)
    s = sample_sigmas(key_time, b, config)
    xs = (1.0 - s[:, None, None, None, None]) * x0 + s[:, None, None, None, None] * eps
    drop = jax.random.uniform(key_drop, (b,)) < config.p_uncond
    context = jnp.where(drop[:, None, None], 0.0, context)
    v = module.apply({"params": params}, xs, 1000.0 * s, context, y)
    change_weight = config.change_weight if change_weight is None else change_weight
    weight = jnp.where(x0 != 0, change_weight, 1.0)
    return jnp.mean(weight * jnp.square(v - (eps - x0)))


@functools.lru_cache(maxsize=4)
def _train_step_fn(config: TrainConfig):
    """The jitted step `(state, videos, first_frames, prompt_ids, table) -> (state, metrics)`."""
    module = WanDiT(config.model)
    tx = make_optimizer(config)
    schedule = lr_schedule(config)
    base_key = jax.random.fold_in(jax.random.key(config.seed), 1)

    def step(state: TrainState, videos, first_frames, prompt_ids, table):
        key = jax.random.fold_in(base_key, state.step)
        context = table[prompt_ids]
        loss, grads = jax.value_and_grad(flow_matching_loss)(
            state.params,
            module,
            config,
            key,
            videos,
            first_frames,
            context,
            change_weight_at(config, state.step),
        )
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        k = state.step.astype(jnp.float32)
        decay = jnp.minimum(config.ema_decay, (1.0 + k) / (10.0 + k))
        ema = jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p, state.ema, params)
        metrics = {"loss": loss, "grad_norm": optax.global_norm(grads), "lr": schedule(state.step)}
        return TrainState(state.step + 1, params, ema, opt_state), metrics

    return jax.jit(step, donate_argnums=(0,))


# ----------------------------------------------------------------------------------------------
# Checkpoints


def _checkpoint_manager(workdir: Path, create: bool = True):
    import orbax.checkpoint as ocp

    options = ocp.CheckpointManagerOptions(max_to_keep=2, create=create, enable_async_checkpointing=False)
    return ocp.CheckpointManager((workdir / "checkpoints").absolute(), options=options)


def _restore(manager, config: TrainConfig, step: int) -> TrainState:
    import orbax.checkpoint as ocp

    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    abstract = jax.tree.map(
        lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=device),
        jax.eval_shape(functools.partial(_init_state, config)),
    )
    return manager.restore(step, args=ocp.args.StandardRestore(abstract))


def _fingerprint(*arrays: np.ndarray) -> str:
    crc = 0
    for a in arrays:
        crc = zlib.crc32(np.ascontiguousarray(a).view(np.uint8).reshape(-1), crc)
    return f"{crc:08x}"


def _check_data(config: TrainConfig, videos, first_frames, prompt_ids):
    videos, first_frames = np.asarray(videos), np.asarray(first_frames)
    prompt_ids = np.asarray(prompt_ids)
    if videos.ndim != 5 or videos.shape[-1] != 3 or videos.dtype != np.uint8:
        raise ValueError(f"videos must be uint8 [N, F, H, W, 3], got {videos.dtype} {videos.shape}")
    n, f, h, w, _ = videos.shape
    if first_frames.shape != (n, h, w, 3) or first_frames.dtype != np.uint8:
        raise ValueError(
            f"first_frames must be uint8 [N, H, W, 3] = {(n, h, w, 3)}, got {first_frames.shape}"
        )
    if prompt_ids.shape != (n,) or not np.issubdtype(prompt_ids.dtype, np.integer) or prompt_ids.min() < 0:
        raise ValueError(f"prompt_ids must be non-negative integers [N] = [{n}], got {prompt_ids.shape}")
    pt, ph, pw = config.model.patch_size
    k = config.pool
    f = latent_frames(f, config.stride)
    if h % k or w % k or f % pt or (h // k) % ph or (w // k) % pw:
        raise ValueError(
            f"video grid (F, H, W) = {(f, h, w)} pooled by {k} is not divisible by the patch size "
            f"{(pt, ph, pw)}"
        )
    return videos, first_frames, prompt_ids.astype(np.int32)


# ----------------------------------------------------------------------------------------------
# The loop


def train(
    config: TrainConfig,
    videos,
    first_frames,
    prompt_ids,
    workdir: str | Path,
    resume: bool = True,
    *,
    stop_at: int | None = None,
    progress: bool = True,
) -> TrainResult:
    """Trains (or resumes training of) the pixel-space I2V toy DiT.

    Args:
      config: the run; must equal the one stored in `workdir` when resuming.
      videos: uint8 [N, F, H, W, 3] training videos.
      first_frames: uint8 [N, H, W, 3] conditioning images (normally videos[:, 0]).
      prompt_ids: int [N] prompt id of each video, in [0, num_prompts).
      workdir: run folder (checkpoints, TensorBoard, config, prompt embeddings).
      resume: continue from the latest checkpoint in `workdir`; False deletes its checkpoints and
        starts over.
      stop_at: stop after this many total steps (< config.steps), e.g. to simulate a preemption; the
        schedule still follows config.steps. A checkpoint is written at the stop.
      progress: show a tqdm bar (process 0 only).

    Returns:
      TrainResult with the final state, the losses of the steps run, and the throughput.
    """
    from tqdm.auto import tqdm

    from cosjax.tensorboard import Writer

    videos, first_frames, prompt_ids = _check_data(config, videos, first_frames, prompt_ids)
    num_prompts = config.num_prompts or int(prompt_ids.max()) + 1
    if prompt_ids.max() >= num_prompts:
        raise ValueError(f"prompt id {prompt_ids.max()} >= num_prompts {num_prompts}")
    config = dataclasses.replace(config, num_prompts=num_prompts)
    workdir = local_folder(workdir, "the training workdir")
    check_destination(workdir, "train_config.json", overwrite=True, what="workdir")
    workdir.mkdir(parents=True, exist_ok=True)
    record = {"train_config": config.to_dict(), "data": {"num_examples": int(len(videos))}}
    record["data"]["fingerprint"] = _fingerprint(videos, first_frames, prompt_ids)
    record["data"]["shape"] = list(videos.shape[1:])
    config_file = workdir / "train_config.json"
    if not resume:
        shutil.rmtree(workdir / "checkpoints", ignore_errors=True)
    elif config_file.exists() and (workdir / "checkpoints").exists():
        stored = json.loads(config_file.read_text())
        if stored != json.loads(json.dumps(record)):
            raise ValueError(
                f"{config_file} records a different config or data than this call; resume with the same "
                "config and data, or pass resume=False (deletes its checkpoints) or another workdir"
            )
    write_atomic(config_file, json.dumps(record, indent=2))  # a crash never leaves a truncated record
    table = prompt_embeddings(config.seed, num_prompts, config.model.text_len, config.model.text_dim)
    with staged_file(workdir / "prompt_embeddings.npy") as tmp, open(tmp, "wb") as f:
        np.save(f, table)

    manager = _checkpoint_manager(workdir)
    latest = manager.latest_step() if resume else None
    state = _restore(manager, config, latest) if latest is not None else init_state(config)
    start = int(state.step)
    end = config.steps if stop_at is None else min(stop_at, config.steps)
    step_fn = _train_step_fn(config)
    table_dev = jnp.asarray(table)
    writer = Writer(workdir / "tb")
    if start == 0:
        writer.text("config", f"```\n{json.dumps(record, indent=2)}\n```")
    bar = tqdm(total=config.steps, initial=start, disable=not (progress and is_main_process()), desc="train")

    losses, pending = [], []
    t_first = t_log = None
    log_start = start
    for k in range(start, end):
        idx = batch_indices(config.seed, k, len(videos), config.batch_size)
        state, metrics = step_fn(state, videos[idx], first_frames[idx], prompt_ids[idx], table_dev)
        pending.append(metrics)
        done = k + 1
        if t_first is None:  # exclude compilation from the throughput
            jax.block_until_ready(metrics["loss"])
            t_first = t_log = time.perf_counter()
            log_start = done
        if done % config.log_every == 0 or done == end:
            fetched = jax.device_get(pending)
            pending = []
            losses.extend(float(m["loss"]) for m in fetched)
            now = time.perf_counter()
            rate = (done - log_start) / (now - t_log) if done > log_start else float("nan")
            for i, m in enumerate(fetched):
                s = done - len(fetched) + i + 1
                writer.scalar("train/loss", m["loss"], s)
                writer.scalar("train/lr", m["lr"], s)
                writer.scalar("train/grad_norm", m["grad_norm"], s)
            if rate == rate:
                writer.scalar("train/steps_per_sec", rate, done)
            bar.set_postfix(loss=f"{losses[-1]:.4f}", lr=f"{float(fetched[-1]['lr']):.2e}")
            bar.update(len(fetched))
            t_log, log_start = now, done
        if done % config.checkpoint_every == 0 or done == end:
            import orbax.checkpoint as ocp

            if manager.latest_step() != done:
                manager.save(done, args=ocp.args.StandardSave(state))
    jax.block_until_ready(state)
    elapsed = time.perf_counter() - t_first if t_first is not None else 0.0
    n_timed = end - start - 1
    bar.close()
    writer.flush()
    writer.close()
    manager.wait_until_finished()
    manager.close()
    return TrainResult(
        state=state,
        losses=np.asarray(losses, np.float32),
        first_step=start,
        steps_per_sec=n_timed / elapsed if n_timed > 0 and elapsed > 0 else float("nan"),
    )


# ----------------------------------------------------------------------------------------------
# Export


def check_export(out_path: str | Path, workdir: str | Path, overwrite: bool = False) -> Path:
    """The export folder (absolute) once `check_destination` allows it: absent, empty, or (with
    `overwrite`) an earlier export; never a folder holding, or inside, the workdir."""
    out_path = local_folder(out_path, "the export folder")
    check_destination(out_path, TOY_FILE, overwrite, sources=[workdir], what="export folder")
    return out_path


def restore_state(workdir: str | Path, step: int | None = None) -> tuple[TrainConfig, TrainState]:
    """The run's config and its TrainState at checkpoint `step` (None: the latest)."""
    workdir = local_folder(workdir, "the training workdir")
    record = json.loads((workdir / "train_config.json").read_text())
    config = TrainConfig.from_dict(record["train_config"])
    manager = _checkpoint_manager(workdir, create=False)
    step = manager.latest_step() if step is None else step
    if step is None or step not in manager.all_steps():
        raise FileNotFoundError(
            f"{workdir / 'checkpoints'} has no checkpoint {step if step else ''}".rstrip()
        )
    state = _restore(manager, config, step)
    manager.close()
    return config, state


def export(
    workdir: str | Path, out_path: str | Path, overwrite: bool = False, sampling: dict | None = None
) -> Path:
    """Writes the EMA weights of the latest checkpoint as a toy model folder (`load_toy` reads it).

    The folder is `cosjax.toy.model_file`'s (`save_toy`), its toy.json adding the step, the training
    config and the data record. It is built in a temporary folder renamed into place, so a failed
    export leaves nothing.
    `sampling` overrides the recommended settings (keys steps, shift, guide_scale, grid, solver).
    `overwrite` replaces an earlier export only (a folder holding toy.json); any other non-empty
    folder, or one that is, holds or lies inside `workdir`, is refused (`check_destination`).

    Returns:
      out_path (absolute).
    """
    workdir, out_path = (
        local_folder(workdir, "the training workdir"),
        check_export(out_path, workdir, overwrite),
    )
    record = json.loads((workdir / "train_config.json").read_text())
    config, state = restore_state(workdir)
    table = np.load(workdir / "prompt_embeddings.npy")
    f, h, w, _ = record["data"]["shape"]
    extra = {"step": int(state.step), "train_config": record["train_config"], "data": record["data"]}
    sampling = {"shift": config.time_shift, **(sampling or {})}
    return save_toy(out_path, config.model, state.ema, table, (f, h, w), sampling, extra, **config.latent)
