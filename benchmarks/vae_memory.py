"""Compiled memory of the Wan VAE decode at real sizes, and how it scales with the frame count.

Nothing is allocated: the parameters are the real-size abstract tree of `jax.eval_shape`
(`cosjax.models.vae.abstract_params`) and the latents a `jax.ShapeDtypeStruct`; each case is only
lowered and compiled, `cosjax.models.vae.decode.lower(params, latents, config).compile()`, and its
`memory_analysis()` read:

  * args   = argument bytes: the parameters decode uses (the decoder and `post_quant_conv`, float32;
             jit drops the unused encoder weights) plus the latents;
  * output = the decoded video, float32 [1, 3, F, H, W];
  * temp   = XLA's scratch buffers (activations of one scan step, the causal caches, the scan's
             stacked outputs, the final transposes);
  * peak   = args + temp + output - alias (alias is 0 here), the device memory the executable needs.

Cases: Wan2.1 (z 16, stride 4x8x8) at 480x832 and Wan2.2 (z 48, 4x16x16) at 704x1280, for
F = 5, 21, 41, 81, 121 pixel frames (latent frames (F - 1) / 4 + 1; 81 frames at 480p is latent
[1, 16, 21, 60, 104], 121 frames at 704x1280 latent [1, 48, 31, 44, 80]). The per-frame slope is a
least-squares line through the cases whose scan has at least two steps (F >= 9): with a single step
(F = 5) XLA unrolls the loop and schedules it differently, so that point is shown but not fitted.

The numbers are the buffer assignment of the backend that compiles (CPU here unless a GPU is
visible); a GPU build fuses and lays out differently (and may add convolution workspace), so treat CPU
numbers as an estimate of the GPU footprint, not a measurement of it.

Launch (from the repository root; about a minute on 2 CPU cores, a few GB of host memory):

    .venv/bin/python benchmarks/vae_memory.py
    .venv/bin/python benchmarks/vae_memory.py --model wan2.1 --frames 5 21 41 81 121 161
    .venv/bin/python benchmarks/vae_memory.py --model wan2.2 --height 704 --width 1280

Measured (jax 0.10.2, XLA CPU, default arguments; GiB):

    model   frames  args   output  temp    peak
    wan2.1       5  0.274  0.022    3.014   3.310   (one scan step: unrolled by XLA)
    wan2.1      81  0.281  0.362    6.755   7.397   latent [1, 16, 21, 60, 104], 480x832
    wan2.1     121  0.285  0.540    6.937   7.762
    wan2.2      81  2.081  0.816   13.700  16.597   704x1280
    wan2.2     121  2.087  1.219   14.109  17.415   latent [1, 48, 31, 44, 80]
    fit (F >= 9): wan2.1 peak = 7.03 GiB + 5.86 MiB/frame (1.3x the 4.57 MiB float32 RGB frame);
                  wan2.2 peak = 14.94 GiB + 20.95 MiB/frame (2.0x the 10.31 MiB frame).
So the footprint is one scan step's activations (a constant) plus about one to two copies of the
output video; it does not grow with the activations of every frame.
"""

from __future__ import annotations

import argparse
import os
import resource
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from cosjax.configs import get_vae  # noqa: E402
from cosjax.models import vae  # noqa: E402

MODELS = {"wan2.1": (get_vae("wan2.1"), 480, 832), "wan2.2": (get_vae("wan2.2"), 704, 1280)}
GIB = 2**30


def decode_memory(config: vae.VAEConfig, frames: int, height: int, width: int) -> dict:
    """Compiles decode for one [1, z, (F-1)/4+1, H/s, W/s] float32 latent; returns its memory in bytes."""
    latents = jax.ShapeDtypeStruct(vae.latent_shape((1, 3, frames, height, width), config), jnp.float32)
    params = vae.abstract_params(config)
    start = time.perf_counter()
    stats = vae.decode.lower(params, latents, config).compile().memory_analysis()
    seconds = time.perf_counter() - start
    args, out = stats.argument_size_in_bytes, stats.output_size_in_bytes
    temp, alias = stats.temp_size_in_bytes, stats.alias_size_in_bytes
    return dict(
        frames=frames,
        latents=latents.shape,
        args=args,
        output=out,
        temp=temp,
        alias=alias,
        peak=args + temp + out - alias,
        compile_s=seconds,
    )


def param_bytes(config: vae.VAEConfig) -> tuple[int, int]:
    """(all float32 parameter bytes, the decoder's + post_quant_conv's), from abstract shapes."""
    params = vae.abstract_params(config)

    def nbytes(tree):
        return sum(int(np.prod(x.shape)) * x.dtype.itemsize for x in jax.tree_util.tree_leaves(tree))

    return nbytes(params), nbytes(params["decoder"]) + nbytes(params["post_quant_conv"])


def report(name: str, config: vae.VAEConfig, frames: list[int], height: int, width: int) -> None:
    total, used = param_bytes(config)
    print(
        f"\n{name} decode at {height}x{width}, float32, {jax.default_backend()} compile; "
        f"params {total / GIB:.3f} GiB, of which decode uses {used / GIB:.3f} GiB"
    )
    print(
        f"{'frames':>6} {'latents':>22} {'args GiB':>9} {'output GiB':>10} {'temp GiB':>9} "
        f"{'peak GiB':>9} {'compile s':>9}"
    )
    rows = []
    for f in frames:
        r = decode_memory(config, f, height, width)
        rows.append(r)
        print(
            f"{f:>6} {str(list(r['latents'])):>22} {r['args'] / GIB:>9.3f} {r['output'] / GIB:>10.3f} "
            f"{r['temp'] / GIB:>9.3f} {r['peak'] / GIB:>9.3f} {r['compile_s']:>9.1f}",
            flush=True,
        )
    fit = [r for r in rows if r["frames"] >= 9]
    out_per_frame = 3 * height * width * 4
    if len(fit) >= 2:
        x = np.array([r["frames"] for r in fit], float)
        slope = {
            k: np.polyfit(x, np.array([r[k] for r in fit], float), 1) for k in ("peak", "temp", "output")
        }
        print(
            f"fit over F >= 9 ({len(fit)} points): peak = {slope['peak'][1] / GIB:.3f} GiB + "
            f"{slope['peak'][0] / 2**20:.2f} MiB/frame "
            f"(temp {slope['temp'][0] / 2**20:+.2f} MiB/frame, output {slope['output'][0] / 2**20:.2f} "
            f"MiB/frame; one float32 RGB frame is {out_per_frame / 2**20:.2f} MiB)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", choices=[*MODELS, "both"], default="both")
    parser.add_argument("--frames", type=int, nargs="+", default=[5, 21, 41, 81, 121])
    parser.add_argument("--height", type=int, help="default: 480 (wan2.1), 704 (wan2.2)")
    parser.add_argument("--width", type=int, help="default: 832 (wan2.1), 1280 (wan2.2)")
    args = parser.parse_args()
    bad = [f for f in args.frames if (f - 1) % 4]
    if bad:
        parser.error(f"frame counts must be 4k+1, got {bad}")
    print(f"jax {jax.__version__}, devices {jax.devices()}")
    for name in MODELS if args.model == "both" else [args.model]:
        config, height, width = MODELS[name]
        report(name, config, args.frames, args.height or height, args.width or width)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB (Linux)
    print(f"\nhost peak RSS of this process: {rss:.2f} GiB (compilation only; no buffers allocated)")


if __name__ == "__main__":
    main()
