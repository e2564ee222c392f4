"""A first look at cosjax on a laptop: a randomly initialised tiny Wan DiT, jitted and sampled.

    cosjax demo [--preset tiny] [--steps 8] [--out runs/demo]

Runs a plain Euler flow-matching loop (x <- x + (s_next - s) * v, as one `lax.scan`) from noise,
records x0-hat = x - s * v at every step, prints timings, and writes the x0-hat trajectory of latent
channel 0 as a step x frame image grid. The weights are random, so the pictures are structureless;
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
from cosjax.models.dit import WanDiT, init_params


def euler_x0_trajectory(module: WanDiT, params, noise, context, sigmas):
    """Euler flow sampling that also returns x0-hat at every step.

    Args:
      noise: float32 [B, C, T, H, W] starting latents at sigma = sigmas[0].
      context: [B, L_txt, text_dim] text embeddings.
      sigmas: float32 [N + 1], decreasing from ~1 to 0.

    Returns:
      (final latents [B, C, T, H, W], x0-hat per step [N, B, C, T, H, W]).
    """

    def step(x, s):
        s_now, s_next = s
        t = jnp.full((x.shape[0],), s_now * 1000.0)
        v = module.apply({"params": params}, x, t, context)
        return x + (s_next - s_now) * v, x - s_now * v

    return jax.lax.scan(step, noise, (sigmas[:-1], sigmas[1:]))


def run_demo(preset: str = "tiny", seed: int = 0, steps: int = 8, out: str = "runs/demo") -> Path:
    """Runs the demo and returns the path of the written trajectory image."""
    cfg = get_preset(preset).dit
    key_params, key_noise, key_text = jax.random.split(jax.random.key(seed), 3)
    params = init_params(cfg, key_params)
    n_params = sum(int(np.prod(a.shape)) for a in jax.tree.leaves(params))
    print(f"model: preset {preset!r}, {cfg.num_layers} layers, dim {cfg.dim}, {n_params:,} parameters")

    c_latent = cfg.out_dim
    noise = jax.random.normal(key_noise, (1, c_latent, 3, 16, 16), jnp.float32)
    context = jax.random.normal(key_text, (1, 8, cfg.text_dim), jnp.float32)
    shift = 5.0
    s = np.linspace(1.0, 0.0, steps + 1)[:-1]
    sigmas = jnp.asarray(np.append(shift * s / (1 + (shift - 1) * s), 0.0), jnp.float32)

    module = WanDiT(cfg)
    sample = jax.jit(lambda p, n, c, s: euler_x0_trajectory(module, p, n, c, s))
    t0 = time.perf_counter()
    compiled = sample.lower(params, noise, context, sigmas).compile()
    t1 = time.perf_counter()
    latents, x0 = jax.block_until_ready(compiled(params, noise, context, sigmas))
    t2 = time.perf_counter()
    print(
        f"compile {t1 - t0:.2f} s; {steps} steps on {noise.shape} latents in {t2 - t1:.3f} s "
        f"on {jax.devices()[0].platform}"
    )
    for i, frame in enumerate(np.asarray(x0)):
        print(f"  step {i:2d}  sigma {float(sigmas[i]):.3f}  |x0_hat| rms {np.sqrt((frame**2).mean()):.3f}")

    grid = np.asarray(x0[:, 0, 0])  # [steps, T, H, W]: channel 0
    lo, hi = np.percentile(grid, [1, 99])
    grid = np.clip((grid - lo) / max(hi - lo, 1e-6), 0, 1)
    tile = np.pad(grid, ((0, 0), (0, 0), (1, 1), (1, 1)), constant_values=1.0)
    image = tile.transpose(0, 2, 1, 3).reshape(tile.shape[0] * tile.shape[2], -1)
    image = np.repeat(np.repeat((image * 255).astype(np.uint8), 8, 0), 8, 1)
    path = Path(out) / "x0_trajectory.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    iio.imwrite(path, image)
    print(
        f"final latents rms {float(jnp.sqrt(jnp.mean(latents**2))):.3f}; "
        f"x0-hat grid (rows = steps, columns = latent frames) written to {path}"
    )
    return path
