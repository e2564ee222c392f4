"""One command for the DiT benchmark table: ours vs Diffusers, next to the FLOP floor, saved as JSON.

    .venv/bin/python benchmarks/suite.py            # auto: GPU -> a14b-480p, CPU -> cpu
    .venv/bin/python benchmarks/suite.py --quick    # tiny config, < 1 min on CPU (checks the suite)

Tables (`--table`):
  quick      dim 256, 2 layers, text_dim 4096, latent 1x8x8 (16 tokens), float32
  cpu        Wan2.1-T2V-1.3B shape (30 layers), latent 3x16x16 = 9 frames at 128x128 (192 tokens), float32
  a14b-480p  Wan2.2-A14B expert width (40 layers, dim 5120), latent 21x60x104 = 81 frames at 480x832
             (32,760 tokens), bfloat16, random weights; GPU

Per framework: compile time, forward (batch 1, plain: text embedded inside) and CFG sampling step
(`runners.py` says what a step is for each) as the median of `--repeats` (>= 5) timed calls after
`--warmup` untimed ones, achieved TFLOP/s from `flops.py` and their share of the device peak, the
roofline floor, peak memory, and the output error against Diffusers. In bfloat16 the suite then
loads the same weights in float32 and reports our bf16 output's error against our float32 output.

On CPU both models stay loaded and the timed calls alternate ours/theirs, so background load hits
both alike; on GPU Diffusers runs first and is freed before our model is loaded (28.6 GB each).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
if "XLA_PYTHON_CLIENT_PREALLOCATE" not in os.environ:  # share the GPU with PyTorch, grow on demand
    os.environ["XLA_PYTHON_CLIENT_PREALLOCATE"] = "false"
    os.environ.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.95")

import numpy as np  # noqa: E402
from flops import H100_MEASURED_TFLOPS, Device, cpu_device, detect_gpu, forward_cost  # noqa: E402

from cosjax.configs import DiTConfig, get_preset  # noqa: E402
from cosjax.paths import write_atomic  # noqa: E402


@dataclasses.dataclass(frozen=True)
class Table:
    """A benchmark configuration: the DiT, the latent grid (T, H, W) and the dtype."""

    config: DiTConfig
    latent: tuple[int, int, int]
    dtype: str
    note: str


def tables() -> dict[str, Table]:
    small = get_preset("wan2.1-t2v-1.3b").dit
    a14b = get_preset("wan2.2-t2v-a14b").dit
    quick = dataclasses.replace(small, dim=256, ffn_dim=512, num_heads=2, num_layers=2)
    return {
        "quick": Table(quick, (1, 8, 8), "float32", "tiny check of the suite"),
        "cpu": Table(small, (3, 16, 16), "float32", "Wan2.1-1.3B shape, 9 frames 128x128"),
        "a14b-480p": Table(a14b, (21, 60, 104), "bfloat16", "Wan2.2-A14B expert, 81 frames 480x832"),
    }


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--table", default="auto", choices=["auto", *tables()])
    p.add_argument("--quick", action="store_true", help="same as --table quick")
    p.add_argument("--layers", type=int, help="override the number of layers")
    p.add_argument("--latent", type=int, nargs=3, metavar=("T", "H", "W"), help="override the latent grid")
    p.add_argument("--dtype", choices=["float32", "bfloat16"], help="override the table's dtype")
    p.add_argument("--repeats", type=int, default=5, help="timed calls per measurement (median reported)")
    p.add_argument("--warmup", type=int, default=1, help="untimed calls before timing")
    p.add_argument("--no-step", action="store_true", help="time forwards only")
    p.add_argument("--no-diffusers", action="store_true", help="time ours only")
    p.add_argument(
        "--sequential",
        action="store_true",
        help="time Diffusers first and free it before loading ours (always on GPU; on CPU the default "
        "alternates timed calls with both models loaded)",
    )
    p.add_argument("--no-f32-check", action="store_true", help="skip the bf16-vs-f32 error of our output")
    p.add_argument("--f32-layers", type=int, help="layers for the f32 check (default: all; less on OOM)")
    p.add_argument("--attention", default=None, help="attention backend (default: by platform)")
    p.add_argument("--fuse-qkv", action="store_true", help="fused self-attention QKV matmul")
    p.add_argument("--peak-tflops", type=float, help="device peak for 'share of peak' (default: by device)")
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch intra-op threads on CPU (default: the fastest of 1, cores/2, cores, timed at warm-up)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, help="output file (default runs/benchmarks/suite-<table>.json)")
    args = p.parse_args(argv)
    if args.repeats < 5 and not args.quick and args.table != "quick":
        p.error("--repeats must be >= 5 for a reported table (use --quick for a check)")
    return args


def make_inputs(config: DiTConfig, latent, seed: int):
    """x [1, C, T, H, W], t [1] = 500, prompt / negative [1, 512, text_dim] (64 / 32 non-zero rows)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((1, config.in_dim, *latent), np.float32)
    t = np.full((1,), 500.0, np.float32)
    context = np.zeros((1, config.text_len, config.text_dim), np.float32)
    negative = np.zeros_like(context)
    context[:, :64] = rng.standard_normal((1, 64, config.text_dim), np.float32)
    negative[:, :32] = rng.standard_normal((1, 32, config.text_dim), np.float32)
    return x, t, context, negative


def device_and_peak(dtype: str, override: float | None) -> tuple[Device, float, str]:
    import jax

    kind = jax.devices()[0].device_kind
    dev = detect_gpu(kind) if jax.default_backend() == "gpu" else None
    dev = dev or cpu_device()
    peak = override or (dev.bf16_tflops if dtype == "bfloat16" else dev.f32_tflops)
    source = "--peak-tflops" if override else f"{dev.name} {dtype} spec"
    return dev, peak, source


def timed_pair(ours, theirs, what: str, repeats: int, warmup: int) -> dict:
    """Warm-up, then `repeats` timed calls of ours.<what> and theirs.<what>, alternating."""
    from measure import summary, time_calls

    runners = {"ours": ours, "diffusers": theirs}
    for _ in range(warmup):
        for r in runners.values():
            if r is not None:
                getattr(r, what)()
    times = {k: [] for k, r in runners.items() if r is not None}
    for _ in range(repeats):
        for k in times:
            times[k] += time_calls(getattr(runners[k], what), 1)
    return {k: summary(v) for k, v in times.items()}


def cpu_memory(runner, what: str) -> dict:
    """RSS growth during one call (CPU): the call's transient memory as the OS sees it."""
    from measure import PeakRSS

    with PeakRSS() as peak:
        getattr(runner, what)()
    return {"rss_growth_bytes": peak.growth, "rss_peak_bytes": peak.peak}


def precision_check(folder: str, v_bf16, args, result: dict) -> None:
    """Our float32 forward on the same weights; error of the bf16 output (and of Diffusers') against it.

    The weights are loaded in bf16 (exact: they are bf16-representable), truncated to `--f32-layers`
    if asked, and cast to float32 leaf by leaf. On out-of-memory the depth is halved and the bf16
    forward is rerun at that depth, so both sides of the comparison have the same layers.
    """
    import jax
    from measure import relative_error
    from runners import Ours

    layers = args.f32_layers
    while True:
        ours32 = None
        try:
            ours32 = Ours(folder, "bfloat16", args.attention, args.fuse_qkv)
            full = ours32.config.num_layers
            if layers:
                truncate(ours32, layers)
            ours32.to_float32().set_inputs(*result["_inputs"])
            ours32.compile(step=False)
            v32 = np.asarray(ours32.forward())
            break
        except Exception as err:  # noqa: BLE001 - XlaRuntimeError RESOURCE_EXHAUSTED
            if "RESOURCE_EXHAUSTED" not in str(err) and "out of memory" not in str(err).lower():
                raise
            layers = max(1, (layers or full) // 2)
            print(f"float32 check: out of memory, retrying with {layers} layers", flush=True)
        finally:
            if ours32 is not None:
                ours32.close()
            jax.clear_caches()
    if layers:  # compare like with like: our bf16 forward truncated to the same depth
        ours16 = truncate(Ours(folder, "bfloat16", args.attention, args.fuse_qkv), layers)
        ours16.set_inputs(*result["_inputs"])
        ours16.compile(step=False)
        v_bf16 = np.asarray(ours16.forward())
        ours16.close()
    check = {
        "layers": layers or result["config"]["num_layers"],
        "ours_bf16_vs_ours_f32": relative_error(v_bf16, v32),
    }
    if "_v_theirs" in result and not layers:
        check["diffusers_bf16_vs_ours_f32"] = relative_error(result["_v_theirs"], v32)
    result["precision"] = check


def save_random(config: DiTConfig, dtype: str, folder: str, seed: int) -> str:
    """Random cosjax parameters in `dtype` saved with `save_dit` under folder/ours; returns that path."""
    import jax

    import cosjax
    from cosjax.weights.convert import save_dit

    params = cosjax.init_params(config, jax.random.key(seed), dtype=dtype)
    path = save_dit(Path(folder) / "ours", config, {"dit": params})
    del params
    return str(path)


def truncate(ours, layers: int):
    """The same runner with only the first `layers` blocks (for checks that do not fit in memory)."""
    import jax

    import cosjax

    config = dataclasses.replace(ours.config, num_layers=layers)
    ours.params = dict(ours.params, blocks=jax.tree.map(lambda a: a[:layers], ours.params["blocks"]))
    ours.config = config
    ours.module = cosjax.WanDiT(
        config,
        ours.module.dtype,
        ours.module.param_dtype,
        ours.module.attention_backend,
        ours.module.fuse_qkv,
    )
    return ours


def run(args) -> dict:
    import jax
    from measure import jax_device_peak, machine_info, relative_error
    from runners import Diffusers, Ours

    name = "quick" if args.quick else args.table
    if name == "auto":
        name = "a14b-480p" if jax.default_backend() == "gpu" else "cpu"
    table = tables()[name]
    config = (
        table.config if args.layers is None else dataclasses.replace(table.config, num_layers=args.layers)
    )
    latent = tuple(args.latent or table.latent)
    dtype = args.dtype or table.dtype
    gpu = jax.default_backend() == "gpu"
    dev, peak, peak_source = device_and_peak(dtype, args.peak_tflops)
    pt, ph, pw = config.patch_size
    tokens = (latent[0] // pt) * (latent[1] // ph) * (latent[2] // pw)
    x, t, context, negative = make_inputs(config, latent, args.seed)
    cbytes = 2 if dtype == "bfloat16" else 4
    fwd_cost = forward_cost(config, tokens, compute_bytes=cbytes)
    step_cost = forward_cost(config, tokens, cfg=True, cached_text_kv=True, compute_bytes=cbytes)
    if not gpu:
        from measure import gemm_tflops

        gemm = gemm_tflops(dtype="float32")  # XLA:CPU runs bfloat16 matmuls in float32
    result: dict = {
        "table": name,
        "note": table.note,
        "machine": machine_info(),
        "config": {**config.to_dict(), "latent": latent, "tokens": tokens, "dtype": dtype},
        "device": {"name": dev.name, "peak_tflops": peak, "peak_source": peak_source}
        | ({} if gpu else {"gemm_tflops": gemm}),
        "flops": {"forward": fwd_cost.to_dict(), "step": step_cost.to_dict()},
        "floor_s": {
            "forward": fwd_cost.floor_seconds(dev, dtype),
            "step": step_cost.floor_seconds(dev, dtype),
        },
        "_inputs": (x, t, context, negative),
    }
    print(
        f"{name}: {table.note}; dim {config.dim}, {config.num_layers} layers, "
        f"latent {latent} -> {tokens} tokens, "
        f"{dtype}, on {dev.name}",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="cosjax_bench_") as folder:
        theirs = None
        if not args.no_diffusers:
            t0 = time.perf_counter()
            theirs = Diffusers(config, dtype, "cuda" if gpu else "cpu", folder, args.seed)
            theirs.set_inputs(x, t, context, negative)
            result["diffusers_build_s"] = time.perf_counter() - t0
            print(
                f"diffusers: built {theirs.params / 1e9:.3f} B params in {result['diffusers_build_s']:.1f} s"
            )
            if not gpu:
                cores = os.cpu_count() or 1
                candidates = [args.threads] if args.threads else sorted({1, max(1, cores // 2), cores})
                tried = theirs.tune_threads(candidates)
                chosen = theirs.torch.get_num_threads()
                result["diffusers_threads"] = {"chosen": chosen, "forward_s_by_threads": tried}
                print(f"diffusers: forward seconds by torch threads {tried}, using {chosen}", flush=True)
            result["_v_theirs"] = theirs.forward().float().cpu().numpy()
        else:  # our own random weights, written where load_dit reads them
            folder = save_random(config, dtype, folder, args.seed)
        timings: dict = {}
        if theirs is not None and (gpu or args.sequential):  # time Diffusers, then free it
            theirs.reset_peak()
            timings["forward"] = timed_pair(None, theirs, "forward", args.repeats, args.warmup)
            result["diffusers_peak_bytes_forward"] = theirs.peak_bytes()
            if not args.no_step:
                theirs.reset_peak()
                timings["step"] = timed_pair(None, theirs, "step", args.repeats, args.warmup)
                result["diffusers_peak_bytes_step"] = theirs.peak_bytes()
            theirs.close()
            theirs = None
        ours = Ours(folder, dtype, args.attention, args.fuse_qkv)
        ours.set_inputs(x, t, context, negative)
        ours.compile(step=not args.no_step)
        t0 = time.perf_counter()
        v_ours = np.asarray(ours.forward())
        ours.timings["forward_first_run_s"] = time.perf_counter() - t0
        print(f"ours: loaded in {ours.load_s:.1f} s, timings {fmt(ours.timings)}", flush=True)
        for what in ("forward", "step")[: 1 if args.no_step else 2]:
            pair = timed_pair(ours, theirs, what, args.repeats, args.warmup)
            timings[what] = {**timings.get(what, {}), **pair}
            if gpu:
                result[f"ours_device_peak_bytes_after_{what}"] = jax_device_peak()
            else:
                result[f"memory_{what}"] = {"ours": cpu_memory(ours, what)}
                if theirs is not None:
                    result[f"memory_{what}"]["diffusers"] = cpu_memory(theirs, what)
        if not args.no_step:
            timings["encode_text"] = timed_pair(ours, None, "encode_text", args.repeats, 0)
        result.update(timings=timings, ours_compile=ours.timings, ours_memory_analysis=ours.memory)
        result["ours_load_s"] = ours.load_s
        if "_v_theirs" in result:
            result["ours_vs_diffusers_rel_err"] = relative_error(v_ours, result["_v_theirs"])
        if theirs is not None:
            theirs.close()
        ours.close()
        del ours
        jax.clear_caches()
        if dtype == "bfloat16" and not args.no_f32_check:
            precision_check(folder, v_ours, args, result)
    return result


def fmt(d: dict) -> str:
    return ", ".join(f"{k} {v:.2f}" for k, v in d.items())


def report(r: dict) -> str:
    """The printed table."""
    from measure import gib

    peak = r["device"]["peak_tflops"]
    threads = r.get("diffusers_threads", {}).get("chosen")
    lines = [
        f"device: {r['device']['name']}; peak {peak:.3g} TFLOP/s ({r['device']['peak_source']}"
        + (f"; measured 2048^3 GEMM {r['device']['gemm_tflops']:.3g}" if "gemm_tflops" in r["device"] else "")
        + "); "
        f"load avg {r['machine']['loadavg'][0]:.2f} on {r['machine']['cpu_count']} cores"
        + (f"; torch threads {threads}" if threads else ""),
        f"config: {r['table']} ({r['note']}), dim {r['config']['dim']}, {r['config']['num_layers']} layers, "
        f"{r['config']['tokens']} tokens, {r['config']['dtype']}",
        "",
        f"{'':34}{'ours':>12}{'diffusers':>12}{'ours/theirs':>13}",
    ]

    def row(label, a, b=None, ratio=False, f="{:.3f}"):
        sa = "-" if a is None else f.format(a)
        sb = "-" if b is None else f.format(b)
        sr = f"{a / b:.3f}" if ratio and a is not None and b else ""
        lines.append(f"{label:<34}{sa:>12}{sb:>12}{sr:>13}")

    c = r["ours_compile"]
    row("compile forward (s)", c["forward_lower_s"] + c["forward_compile_s"])
    if "step_compile_s" in c:
        row("compile step (s)", c["step_lower_s"] + c["step_compile_s"])
    for what in ("forward", "step"):
        tm = r["timings"].get(what)
        if not tm:
            continue
        flops = r["flops"][what]["total"]
        o, d = tm["ours"]["median_s"], tm.get("diffusers", {}).get("median_s")
        label = "forward (batch 1)" if what == "forward" else "CFG step (2 x batch 1)"
        row(f"{label} median of {len(tm['ours']['times_s'])} (s)", o, d, ratio=True)
        row("  min (s)", tm["ours"]["min_s"], tm.get("diffusers", {}).get("min_s"))
        row("  achieved TFLOP/s", flops / o / 1e12, d and flops / d / 1e12, f="{:.4g}")
        row(
            "  share of peak (%)",
            100 * flops / o / 1e12 / peak,
            d and 100 * flops / d / 1e12 / peak,
            f="{:.1f}",
        )
        row("  roofline floor (s)", r["floor_s"][what], f="{:.4g}")
        gemm = r["device"].get("gemm_tflops")
        if gemm:
            row(
                "  share of 2048^3 GEMM rate (%)",
                100 * flops / o / 1e12 / gemm,
                d and 100 * flops / d / 1e12 / gemm,
                f="{:.1f}",
            )
        if r["machine"]["jax_platform"] == "gpu" and r["config"]["dtype"] == "bfloat16":
            row(
                f"  share of {H100_MEASURED_TFLOPS:.0f} TF/s (%)",
                100 * flops / o / 1e12 / H100_MEASURED_TFLOPS,
            )
    if "encode_text" in r["timings"]:
        row("text K/V cache, once per run (s)", r["timings"]["encode_text"]["ours"]["median_s"])
    for what in ("forward", "step"):
        mem = r.get(f"memory_{what}")
        if mem:
            g = mem.get("diffusers", {}).get("rss_growth_bytes")
            lines.append(
                f"{'RSS growth during ' + what:<34}{gib(mem['ours']['rss_growth_bytes']):>12}{gib(g):>12}"
            )
        if f"ours_device_peak_bytes_after_{what}" in r:
            ours_peak, theirs = (
                r[f"ours_device_peak_bytes_after_{what}"],
                r.get(f"diffusers_peak_bytes_{what}"),
            )
            lines.append(f"{'device peak after ' + what:<34}{gib(ours_peak):>12}{gib(theirs):>12}")
        ma = r["ours_memory_analysis"].get(what)
        if ma:
            lines.append(f"{'XLA memory analysis ' + what:<34}{gib(ma['total_bytes']):>12}")
    if "ours_vs_diffusers_rel_err" in r:
        lines.append(f"{'output rel. error ours vs diffusers':<34}{r['ours_vs_diffusers_rel_err']:>12.2e}")
    if "precision" in r:
        p = r["precision"]
        lines.append(
            f"{'bf16 vs f32 (ours), ' + str(p['layers']) + ' layers':<34}{p['ours_bf16_vs_ours_f32']:>12.2e}"
        )
        if "diffusers_bf16_vs_ours_f32" in p:
            lines.append(
                f"{'diffusers bf16 vs ours f32':<34}{'':>12}{p['diffusers_bf16_vs_ours_f32']:>12.2e}"
            )
    return "\n".join(lines)


def main(argv=None) -> dict:
    args = parse_args(argv)
    result = run(args)
    text = report(result)
    print()
    print(text)
    out = Path(args.json or f"runs/benchmarks/suite-{result['table']}.json")
    clean = {k: v for k, v in result.items() if not k.startswith("_")}
    clean["machine"]["loadavg_end"] = list(os.getloadavg())
    write_atomic(out, json.dumps(clean, indent=2, default=float))
    print(f"\nwrote {out}")
    return clean


if __name__ == "__main__":
    main()
