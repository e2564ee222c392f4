"""A first look at cosjax on a laptop: a randomly initialised tiny Wan DiT, jitted and sampled.

    cosjax demo [--preset tiny] [--steps 8] [--out runs/demo]

Samples with the real sampler (Euler on the DiffSynth grid, CFG, one `lax.scan`) under `trace_x0`,
which records x0-hat = x - s * v at every step, prints timings, and writes the x0-hat trajectory of
latent channel 0 as a step x frame image grid. The weights are random, so the pictures are structureless;
the point is that the whole model path compiles once and runs in seconds. A later release replaces
the random weights with the embedded trained model.
"""

from __future__ import annotations

import time
from pathlib import Path

import imageio.v3 as iio
import jax
import jax.numpy as jnp
import numpy as np

from cosjax.configs import get_preset
from cosjax.models.dit import init_params
from cosjax.sampling.sampler import Conditioning, SamplerSettings, make_sampler
from cosjax.transforms import trace_x0


def run_demo(preset: str = "tiny", seed: int = 0, steps: int = 8, out: str = "runs/demo") -> Path:
    """Runs the demo and returns the path of the written trajectory image."""
    cfg = get_preset(preset).dit
    key_params, key_noise, key_text = jax.random.split(jax.random.key(seed), 3)
    params = init_params(cfg, key_params)
    n_params = sum(int(np.prod(a.shape)) for a in jax.tree.leaves(params))
    print(f"model: preset {preset!r}, {cfg.num_layers} layers, dim {cfg.dim}, {n_params:,} parameters")

    shape = (1, cfg.out_dim, 3, 16, 16)
    context = jax.random.normal(key_text, (1, 8, cfg.text_dim), jnp.float32)
    cond = Conditioning(context=context, negative=jnp.zeros((1, 1, cfg.text_dim)), latent_shape=shape)
    settings = SamplerSettings(
        steps=steps, shift=5.0, guide_scale=(5.0, 5.0), grid="diffsynth", solver="euler"
    )
    sampler = trace_x0(make_sampler(cfg, {"dit": params}, settings))

    sample = jax.jit(sampler)
    t0 = time.perf_counter()
    compiled = sample.lower(cond, key_noise).compile()
    t1 = time.perf_counter()
    result = jax.block_until_ready(compiled(cond, key_noise))
    t2 = time.perf_counter()
    latents, x0 = result.latents, result.trace.x0
    print(
        f"compile {t1 - t0:.2f} s; {steps} Euler steps with CFG on {shape} latents in {t2 - t1:.3f} s "
        f"on {jax.devices()[0].platform}"
    )
    sigmas = sampler.schedule.sigmas
    for i, frame in enumerate(np.asarray(x0)):
        print(f"  step {i:2d}  sigma {float(sigmas[i]):.3f}  |x0_hat| rms {np.sqrt((frame**2).mean()):.3f}")

    grid = np.asarray(x0[:, 0, 0])  # [steps, T, H, W]: channel 0
    lo, hi = np.percentile(grid, [1, 99])
    grid = np.clip((grid - lo) / max(hi - lo, 1e-6), 0, 1)
    tile = np.pad(grid, ((0, 0), (0, 0), (1, 1), (1, 1)), constant_values=1.0)
    image = tile.transpose(0, 2, 1, 3).reshape(tile.shape[0] * tile.shape[2], -1)
    image = np.repeat(np.repeat((image * 255).astype(np.uint8), 8, 0), 8, 1)
    from cosjax.paths import user_path
    from cosjax.runs import write_atomic

    path = user_path(out) / "x0_trajectory.png"
    write_atomic(path, iio.imwrite("<bytes>", image, extension=".png"))
    print(
        f"final latents rms {float(jnp.sqrt(jnp.mean(latents**2))):.3f}; "
        f"x0-hat grid (rows = steps, columns = latent frames) written to {path}"
    )
    return path
