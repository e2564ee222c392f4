"""CPU benchmark: the cost of the sampler transforms against the plain sampler, all jitted.

A small random DiT (default: dim 256, ffn 512, 2 heads, 8 layers, 16 in/out channels, text_dim 64,
text_len 512; one expert "dit") samples with Euler on the "diffsynth" grid for 10 steps, CFG on
(a negative prompt, so every DiT call is a batch of 2B), latents (B, C, T, H, W) = (1, 16, 3, 8, 8).
The parameters are arguments of the jitted functions (not baked-in constants).

Launch (from the repository root):

    .venv/bin/python benchmarks/transforms_cpu.py
    .venv/bin/python benchmarks/transforms_cpu.py --layers 4 --steps 6 --repeats 3 --json /tmp/t.json

Measured, for each variant, with `jax.jit(f).lower(...)` and `.compile()` timed apart (wall clock),
then one warm-up call ("first run"), then the median of --repeats calls each ended by
`block_until_ready` (the variants' timed calls are interleaved, so background load hits all alike):
  1. plain:       `sampler(cond, key)`, one run;
  2. ensemble(3): `ensemble(sampler, seeds=3)` (default middle layers [L/2, 3L/4) merged at step 0),
                  one vmapped call producing 3 seeds;
  3. 3 x plain:   three calls of the compiled plain sampler with keys k, fold_in(k, 1), fold_in(k, 2)
                  (the seeds ensemble(3) uses), each blocked on before the next; no extra compile;
  4. traced:      `trace_x0(capture(sampler, layers=all, steps=all, what="energy"))`, one run that
                  also returns x0_hat [S, B, C, T, H, W] and the energy [S, L_layers, B, tokens].
Ratios printed: ensemble(3) / 3 x plain (vmap batching vs a Python loop of runs), ensemble(3) / plain
(cost of 3 seeds over 1), traced / plain (overhead of recording x0 and all energies, in %).
Sanity checks printed: the traced run's latents equal the plain run's (captures do not change the
sampling), and ensemble seed 0 differs from the plain run (the merge did something).
The load average is printed at the start and the end: on a shared machine other processes skew the
timings.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import numpy as np


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--dim", type=int, default=256, help="hidden width D")
    p.add_argument("--ffn", type=int, default=512, help="feed-forward inner width")
    p.add_argument("--heads", type=int, default=2, help="attention heads")
    p.add_argument("--layers", type=int, default=8, help="transformer blocks")
    p.add_argument("--channels", type=int, default=16, help="latent channels (DiT in_dim = out_dim)")
    p.add_argument("--text-dim", type=int, default=64, help="text embedding width")
    p.add_argument("--text-len", type=int, default=512, help="the context is zero-padded to this length")
    p.add_argument("--text-tokens", type=int, default=32, help="prompt (and negative prompt) tokens")
    p.add_argument("--steps", type=int, default=10, help="sampling steps")
    p.add_argument("--shift", type=float, default=5.0, help="sigma shift")
    p.add_argument("--guide-scale", type=float, default=5.0, help="CFG scale")
    p.add_argument("--no-config", action="store_true", help="sample without a negative prompt (no CFG)")
    p.add_argument("--grid", type=str, default="diffsynth", help="sigma grid")
    p.add_argument("--solver", type=str, default="euler", help="solver")
    p.add_argument(
        "--latent",
        type=int,
        nargs=5,
        default=(1, 16, 3, 8, 8),
        metavar=("B", "C", "T", "H", "W"),
        help="latent shape B C T H W (C must equal --channels)",
    )
    p.add_argument("--seeds", type=int, default=3, help="ensemble seeds (and sequential plain runs)")
    p.add_argument("--repeats", type=int, default=7, help="timed calls per variant")
    p.add_argument("--seed", type=int, default=0, help="PRNG seed of parameters, text and sampling")
    p.add_argument("--json", type=str, default=None, help="also write the results to this JSON file")
    return p.parse_args()


def loadavg() -> tuple[float, float, float]:
    return tuple(round(v, 2) for v in os.getloadavg())


def rel_err(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def main() -> None:
    args = parse_args()
    load_start = loadavg()

    import jax

    import cosjax as cj
    from cosjax import transforms as T
    from cosjax.configs import DiTConfig
    from cosjax.sampling.sampler import Conditioning, SamplerSettings, make_sampler

    latent = tuple(args.latent)
    if latent[1] != args.channels:
        raise SystemExit(f"--latent C = {latent[1]} must equal --channels {args.channels}")
    config = DiTConfig(
        dim=args.dim,
        ffn_dim=args.ffn,
        num_heads=args.heads,
        num_layers=args.layers,
        in_dim=args.channels,
        out_dim=args.channels,
        text_len=args.text_len,
        text_dim=args.text_dim,
    )
    pt, ph, pw = config.patch_size
    if latent[2] % pt or latent[3] % ph or latent[4] % pw:
        raise SystemExit(f"latent (T, H, W) must be divisible by the patch size {config.patch_size}")
    tokens = (latent[2] // pt) * (latent[3] // ph) * (latent[4] // pw)
    settings = SamplerSettings(
        steps=args.steps,
        shift=args.shift,
        guide_scale=(args.guide_scale, args.guide_scale),
        grid=args.grid,
        solver=args.solver,
    )
    cfg_on = not args.no_cfg

    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores; "
        f"jax {jax.__version__} ({jax.devices()[0].platform}); load average at start (1/5/15 min): "
        f"{load_start[0]:.2f} {load_start[1]:.2f} {load_start[2]:.2f}"
    )
    print(
        f"config: dim {config.dim}, ffn {config.ffn_dim}, heads {config.num_heads}, "
        f"layers {config.num_layers}, "
        f"in/out {config.in_dim}/{config.out_dim}, text_dim {config.text_dim}, text_len {config.text_len} "
        f"({args.text_tokens} prompt tokens), float32"
    )
    print(
        f"sampling: {args.solver} on the {args.grid!r} grid, {args.steps} steps, shift {args.shift}, "
        f"CFG {'on (scale ' + str(args.guide_scale) + ', DiT batch 2B)' if cfg_on else 'off'}, "
        f"latent B,C,T,H,W={latent} -> {tokens} video tokens; ensemble of {args.seeds} seeds merging "
        f"layers {list(T.default_ensemble_layers(config.num_layers))} at step 0",
        flush=True,
    )

    key_params, key_text, key_neg, key_sample = jax.random.split(jax.random.key(args.seed), 4)
    t0 = time.perf_counter()
    params = jax.block_until_ready(cj.init_params(config, key_params))
    num_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params))
    print(f"init_params: {num_params / 1e6:.2f} M params in {time.perf_counter() - t0:.1f} s", flush=True)
    b = latent[0]
    cond = Conditioning(
        context=jax.random.normal(key_text, (b, args.text_tokens, config.text_dim)),
        negative=jax.random.normal(key_neg, (b, args.text_tokens, config.text_dim)) if cfg_on else None,
        latent_shape=latent,
    )
    seq_keys = [key_sample] + [jax.random.fold_in(key_sample, i) for i in range(1, args.seeds)]

    def sampler_of(p):
        return make_sampler(config, {"dit": p}, settings)

    all_layers, all_steps = list(range(config.num_layers)), list(range(args.steps))
    fns = {
        "plain": lambda p, c, k: sampler_of(p)(c, k),
        "ensemble": lambda p, c, k: T.ensemble(sampler_of(p), seeds=args.seeds)(c, k),
        "traced": lambda p, c, k: T.trace_x0(T.capture(sampler_of(p), all_layers, all_steps, "energy"))(c, k),
    }

    # --- lower, compile, first run -----------------------------------------------------------------
    compiled, lower_s, compile_s, first_s, outputs = {}, {}, {}, {}, {}
    for name, fn in fns.items():
        t0 = time.perf_counter()
        lowered = jax.jit(fn).lower(params, cond, key_sample)
        lower_s[name] = time.perf_counter() - t0
        t0 = time.perf_counter()
        compiled[name] = lowered.compile()
        compile_s[name] = time.perf_counter() - t0
        t0 = time.perf_counter()
        outputs[name] = jax.block_until_ready(compiled[name](params, cond, key_sample))
        first_s[name] = time.perf_counter() - t0
        print(
            f"{name}: lower {lower_s[name]:.2f} s, compile {compile_s[name]:.2f} s, "
            f"first run {first_s[name]:.2f} s",
            flush=True,
        )

    run_plain, run_ens, run_traced = compiled["plain"], compiled["ensemble"], compiled["traced"]

    def sequential():
        return [jax.block_until_ready(run_plain(params, cond, k)) for k in seq_keys]

    calls = {
        "plain": lambda: jax.block_until_ready(run_plain(params, cond, key_sample)),
        "ensemble": lambda: jax.block_until_ready(run_ens(params, cond, key_sample)),
        "sequential": sequential,
        "traced": lambda: jax.block_until_ready(run_traced(params, cond, key_sample)),
    }
    seq_outputs = sequential()  # warm-up of the loop (the program is already compiled)

    # --- timed runs, interleaved ---------------------------------------------------------------------
    times: dict[str, list[float]] = {name: [] for name in calls}
    for r in range(args.repeats):
        for name, call in calls.items():
            t0 = time.perf_counter()
            call()
            times[name].append(time.perf_counter() - t0)
        print(f"repeat {r + 1}/{args.repeats}: " + ", ".join(f"{n} {t[-1]:.3f} s" for n, t in times.items()))
    med = {name: statistics.median(t) for name, t in times.items()}

    # --- sanity checks --------------------------------------------------------------------------------
    plain, ens, traced = outputs["plain"], outputs["ensemble"], outputs["traced"]
    trace_vs_plain = rel_err(traced.latents, plain.latents)
    seed0_vs_plain = rel_err(ens.latents[0], plain.latents)
    seq0_vs_plain = rel_err(seq_outputs[0].latents, plain.latents)
    print()
    print(
        f"shapes: ensemble latents {tuple(ens.latents.shape)}, traced x0 {tuple(traced.trace.x0.shape)}, "
        f"traced energy {tuple(traced.trace.energy.shape)}"
    )
    print(
        f"checks: rel err traced vs plain latents {trace_vs_plain:.2e} (expect ~0); sequential run 0 vs "
        f"plain {seq0_vs_plain:.2e} (expect 0); ensemble seed 0 vs plain {seed0_vs_plain:.2e} "
        f"(expect > 0: the step-0 merge changes the trajectory)"
    )

    # --- report ----------------------------------------------------------------------------------------
    labels = {
        "plain": "plain (1 run)",
        "ensemble": f"ensemble({args.seeds}), vmapped",
        "sequential": f"{args.seeds} x plain, sequential",
        "traced": "trace_x0+capture energy",
    }
    print()
    header = (
        f"{'variant':<28}{'lower s':>9}{'compile s':>11}{'first s':>9}{'median s':>10}{'min s':>9}"
        f"{'max s':>9}"
    )
    print(header)
    print("-" * len(header))
    for name, label in labels.items():
        src = "plain" if name == "sequential" else name
        lo, co, fi = (
            ("-", "-", "-")
            if name == "sequential"
            else (f"{lower_s[src]:.2f}", f"{compile_s[src]:.2f}", f"{first_s[src]:.2f}")
        )
        print(
            f"{label:<28}{lo:>9}{co:>11}{fi:>9}{med[name]:>10.3f}{min(times[name]):>9.3f}"
            f"{max(times[name]):>9.3f}"
        )
    ratios = {
        "ensemble_over_sequential": med["ensemble"] / med["sequential"],
        "ensemble_over_plain": med["ensemble"] / med["plain"],
        "traced_over_plain": med["traced"] / med["plain"],
    }
    n = args.seeds
    lines = [
        (
            f"ensemble({n}) / {n} x plain, sequential",
            ratios["ensemble_over_sequential"],
            "vmap faster" if ratios["ensemble_over_sequential"] < 1 else "loop faster",
        ),
        (
            f"ensemble({n}) / plain, 1 run",
            ratios["ensemble_over_plain"],
            f"per seed {ratios['ensemble_over_plain'] / n:.3f} of a plain run",
        ),
        (
            "traced+energy / plain",
            ratios["traced_over_plain"],
            f"overhead {100 * (ratios['traced_over_plain'] - 1):+.1f} %",
        ),
    ]
    width = max(len(label) for label, _, _ in lines)
    print()
    for label, value, note in lines:
        print(f"{label:<{width}} = {value:.3f}  ({note})")
    load_end = loadavg()
    print(
        f"load average at the end (1/5/15 min): {load_end[0]:.2f} {load_end[1]:.2f} {load_end[2]:.2f} "
        f"on {os.cpu_count()} cores (other processes competing for the CPU skew the timings)"
    )

    if args.json:
        result = {
            "machine": {
                "processor": platform.processor() or platform.machine(),
                "cpu_count": os.cpu_count(),
                "loadavg_start": load_start,
                "loadavg_end": load_end,
            },
            "versions": {"jax": jax.__version__},
            "config": {
                **config.to_dict(),
                "params": num_params,
                "text_tokens": args.text_tokens,
                "steps": args.steps,
                "shift": args.shift,
                "guide_scale": args.guide_scale,
                "config": cfg_on,
                "grid": args.grid,
                "solver": args.solver,
                "latent_shape": list(latent),
                "video_tokens": tokens,
                "seeds": args.seeds,
                "ensemble_layers": list(T.default_ensemble_layers(config.num_layers)),
                "ensemble_steps": [0],
                "repeats": args.repeats,
                "dtype": "float32",
            },
            "lower_s": lower_s,
            "compile_s": compile_s,
            "first_run_s": first_s,
            "times_s": times,
            "median_s": med,
            "ratios": ratios,
            "traced_overhead_pct": 100 * (ratios["traced_over_plain"] - 1),
            "checks": {
                "traced_vs_plain_rel_err": trace_vs_plain,
                "sequential0_vs_plain_rel_err": seq0_vs_plain,
                "ensemble_seed0_vs_plain_rel_err": seed0_vs_plain,
            },
        }
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
