"""CPU benchmark: our jitted JAX `WanDiT` forward against Diffusers' `WanTransformer3DModel` forward.

Both run the Wan2.1-T2V-1.3B architecture (dim 1536, ffn 8960, 12 heads, 30 layers, text_dim 4096,
text_len 512) in float32 on CPU, with identical weights: a randomly initialised Diffusers model is
written with `save_pretrained` to a temporary folder and loaded into JAX with `cosjax.load_dit`.
The two outputs are compared (relative error ||v_jax - v_torch|| / ||v_torch||) so the benchmark
cannot silently time two different functions.

`benchmarks/suite.py` supersedes this script (it adds the CFG step with the text K/V cache, memory,
JSON and the GPU table); this one is kept for the numbers quoted in the top-level README.

Launch (from the repository root):

    .venv/bin/python benchmarks/dit_cpu.py --layers 30
    .venv/bin/python benchmarks/dit_cpu.py --layers 4 --frames 3 --height 16 --width 16 --repeats 3

Measured:
  * JAX compile time: `jax.jit(f).lower(...).compile()`, wall clock;
  * JAX steady-state forward: median over --repeats calls of the compiled function, each ended by
    `block_until_ready` (the first execution is a warm-up, reported apart as "first run");
  * Diffusers forward: median over --repeats calls under `torch.no_grad()`, after one warm-up call.
By default both models stay in memory (about 2 x 5.7 GB at 30 layers) and the timed calls alternate
torch, JAX, torch, JAX, ... so that load from other processes hits both alike; `--sequential` times
Diffusers first and frees it before loading the JAX weights.

FLOP model of one forward (batch B, L = F'*H'*W' video tokens after the (1, 2, 2) patchify,
Lt = text_len = 512 text tokens, D = dim, Fd = ffn_dim, Dt = text_dim, N = num_layers; one
multiply-add counts as 2 FLOPs; norms, RoPE, softmax, GELU and modulation are not counted):

    per layer = 2*L*4*D^2                    self-attention q, k, v, o projections
              + 2*L*2*D^2 + 2*Lt*2*D^2       cross-attention q, o (video tokens); k, v (text tokens)
              + 2*L*2*D*Fd                   feed-forward fc1, fc2
              + 4*L*L*D                      self-attention scores Q K^T and weighted sum P V
              + 4*L*Lt*D                     cross-attention scores and weighted sum
    outside   = 2*L*(C_in*pv)*D              patch embedding (pv = patch volume = 4)
              + 2*Lt*(Dt*D + D^2)            text embedding (two linears)
              + 2*(freq_dim*D + D^2 + 6*D^2) time embedding and projection (per sample)
              + 2*L*D*(C_out*pv)             output head
    total     = B * (N * per layer + outside)

Achieved GFLOP/s = total / median forward time; both frameworks compute the same function, so the
same FLOP count is used for both.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import tempfile
import time

import numpy as np


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--layers", type=int, default=30, help="transformer blocks (1.3B model: 30)")
    p.add_argument("--frames", type=int, default=3, help="latent frames T")
    p.add_argument(
        "--height",
        type=int,
        default=16,
        help="latent height H (480x832 video: a 60x104 latent, i.e. a 30x52 patch grid)",
    )
    p.add_argument("--width", type=int, default=16, help="latent width W")
    p.add_argument("--batch", type=int, default=1, help="batch size")
    p.add_argument(
        "--text-tokens",
        type=int,
        default=64,
        help="non-zero text rows; the context is zero-padded to 512 tokens for both models",
    )
    p.add_argument("--repeats", type=int, default=5, help="timed forwards per framework")
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="torch intra-op threads")
    p.add_argument(
        "--sequential",
        action="store_true",
        help="time all torch runs, free the torch model, then time JAX (needs ~6 GB less "
        "memory; by default both stay loaded and the timed runs alternate torch/JAX "
        "so background load affects both alike)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=str, default=None, help="also write the results to this JSON file")
    return p.parse_args()


def forward_flops(cfg, batch: int, num_tokens: int, text_len: int) -> dict[str, float]:
    """FLOPs of one forward under the model in the module docstring (`flops.forward_cost`), by part."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from flops import forward_cost

    c = forward_cost(cfg, num_tokens, batch=batch, text_len=text_len)
    return {
        "blocks_linear": c.linear + c.text_kv,
        "blocks_attention": c.attention,
        "embed_and_head": c.embed_head + c.text_embed + c.time_embed,
        "total": c.total,
    }


def timed(fn, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def torch_forward_fn(model, x, t, context):
    """A no-argument Diffusers forward under no_grad on fixed inputs; returns the torch output."""
    import torch

    tx, tt, tc = torch.from_numpy(x), torch.from_numpy(t), torch.from_numpy(context)

    def forward():
        with torch.no_grad():
            return model(tx, tt, tc, return_dict=False)[0]

    return forward


def main() -> None:
    args = parse_args()

    import torch

    torch.set_num_threads(args.threads)
    import diffusers
    import jax
    import jax.numpy as jnp
    from diffusers import WanTransformer3DModel

    import cosjax
    from cosjax import get_preset

    base = get_preset("wan2.1-t2v-1.3b").dit
    pt, ph, pw = base.patch_size
    if args.frames % pt or args.height % ph or args.width % pw:
        raise SystemExit(f"latent (T, H, W) must be divisible by the patch size {base.patch_size}")
    grid = (args.frames // pt, args.height // ph, args.width // pw)
    num_tokens = int(np.prod(grid))

    rng = np.random.default_rng(args.seed)
    x = rng.standard_normal((args.batch, base.in_dim, args.frames, args.height, args.width), np.float32)
    t = np.full((args.batch,), 500.0, np.float32)
    context = np.zeros((args.batch, base.text_len, base.text_dim), np.float32)
    context[:, : args.text_tokens] = rng.standard_normal(
        (args.batch, args.text_tokens, base.text_dim), np.float32
    )

    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores; "
        f"jax {jax.__version__} ({jax.devices()[0].platform}), torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), diffusers {diffusers.__version__}"
    )
    print(
        f"config: wan2.1-t2v-1.3b, layers={args.layers}, latent B,C,T,H,W="
        f"{x.shape}, patch grid {grid} -> {num_tokens} video tokens, text {base.text_len} tokens "
        f"({args.text_tokens} non-zero), float32",
        flush=True,
    )

    # --- Diffusers model with random weights, saved for the JAX side ---------------------------------
    torch.manual_seed(args.seed)
    t0 = time.perf_counter()
    tmodel = WanTransformer3DModel(
        patch_size=base.patch_size,
        num_attention_heads=base.num_heads,
        attention_head_dim=base.head_dim,
        in_channels=base.in_dim,
        out_channels=base.out_dim,
        text_dim=base.text_dim,
        freq_dim=base.freq_dim,
        ffn_dim=base.ffn_dim,
        num_layers=args.layers,
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
        eps=base.eps,
        rope_max_seq_len=1024,
    ).eval()
    num_params = sum(p.numel() for p in tmodel.parameters())
    print(
        f"built Diffusers model ({num_params / 1e9:.3f} B params) in {time.perf_counter() - t0:.1f} s",
        flush=True,
    )

    torch_times: list[float] = []
    jax_times: list[float] = []
    with tempfile.TemporaryDirectory(prefix="dit_cpu_bench_") as tmp:
        t0 = time.perf_counter()
        tmodel.save_pretrained(tmp)
        print(f"save_pretrained in {time.perf_counter() - t0:.1f} s", flush=True)

        # --- Diffusers warm-up (and, with --sequential, all its timed runs) ---------------------------
        torch_forward = torch_forward_fn(tmodel, x, t, context)
        t0 = time.perf_counter()
        v_torch = torch_forward().numpy().copy()
        torch_warmup = time.perf_counter() - t0
        print(f"torch: warm-up {torch_warmup:.2f} s", flush=True)
        if args.sequential:
            torch_times = timed(torch_forward, args.repeats)
            del tmodel, torch_forward  # free its weights before the JAX copy is made
            gc.collect()

        # --- JAX load, compile, first run -------------------------------------------------------------
        t0 = time.perf_counter()
        loaded = cosjax.load_dit(tmp, dtype="float32")
        jax.block_until_ready(loaded.params)
        load_s = time.perf_counter() - t0
    cfg = loaded.config
    assert cfg.num_layers == args.layers and cfg.dim == base.dim and cfg.ffn_dim == base.ffn_dim, cfg
    module = loaded.module(dtype=jnp.float32)
    params = loaded.params
    print(f"cosjax.load_dit in {load_s:.1f} s", flush=True)

    jx, jt, jc = jnp.asarray(x), jnp.asarray(t), jnp.asarray(context)
    fwd = jax.jit(lambda p, x_, t_, c_: module.apply({"params": p}, x_, t_, c_))
    t0 = time.perf_counter()
    lowered = fwd.lower(params, jx, jt, jc)
    lower_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    compiled = lowered.compile()
    compile_s = time.perf_counter() - t0

    def jax_forward():
        return jax.block_until_ready(compiled(params, jx, jt, jc))

    t0 = time.perf_counter()
    v_jax = np.asarray(jax_forward())
    jax_first = time.perf_counter() - t0
    print(f"jax: lower {lower_s:.2f} s, compile {compile_s:.2f} s, first run {jax_first:.2f} s", flush=True)

    # --- timed runs: interleaved torch, jax, torch, jax, ... unless --sequential -------------------
    if args.sequential:
        jax_times = timed(jax_forward, args.repeats)
    else:
        for _ in range(args.repeats):
            torch_times += timed(torch_forward, 1)
            jax_times += timed(jax_forward, 1)
    print(f"torch times {[round(s, 3) for s in torch_times]}", flush=True)
    print(f"jax times   {[round(s, 3) for s in jax_times]}", flush=True)

    # --- agreement, FLOPs, report -------------------------------------------------------------------
    diff = v_jax.astype(np.float64) - v_torch.astype(np.float64)
    rel_err = float(np.linalg.norm(diff) / np.linalg.norm(v_torch.astype(np.float64)))
    max_abs = float(np.abs(diff).max())
    flops = forward_flops(cfg, args.batch, num_tokens, cfg.text_len)
    jax_med, torch_med = statistics.median(jax_times), statistics.median(torch_times)
    jax_gflops, torch_gflops = flops["total"] / jax_med / 1e9, flops["total"] / torch_med / 1e9
    ratio = torch_med / jax_med

    print()
    print(
        f"FLOPs per forward: {flops['total'] / 1e9:.1f} GFLOP (block linears "
        f"{flops['blocks_linear'] / 1e9:.1f}, attention {flops['blocks_attention'] / 1e9:.1f}, "
        f"embeddings+head {flops['embed_and_head'] / 1e9:.1f})"
    )
    print(
        f"output agreement: rel err ||jax - torch|| / ||torch|| = {rel_err:.3e}, max |diff| = "
        f"{max_abs:.3e}, ||torch|| = {np.linalg.norm(v_torch):.3e}"
    )
    print()
    header = f"{'framework':<22}{'compile s':>10}{'median s':>10}{'min s':>10}{'max s':>10}{'GFLOP/s':>10}"
    print(header)
    print("-" * len(header))
    print(
        f"{'jax (jit, XLA CPU)':<22}{lower_s + compile_s:>10.2f}{jax_med:>10.3f}{min(jax_times):>10.3f}"
        f"{max(jax_times):>10.3f}{jax_gflops:>10.1f}"
    )
    print(
        f"{'diffusers (torch)':<22}{'-':>10}{torch_med:>10.3f}{min(torch_times):>10.3f}"
        f"{max(torch_times):>10.3f}{torch_gflops:>10.1f}"
    )
    print()
    print(f"ratio torch_time / jax_time = {ratio:.3f}  ({'JAX' if ratio > 1 else 'Diffusers'} faster)")
    load = os.getloadavg()
    print(
        f"load average at the end (1/5/15 min): {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} "
        f"on {os.cpu_count()} cores (other processes competing for the CPU skew the timings)"
    )

    if rel_err > 1e-3:
        print(
            f"WARNING: outputs disagree (rel err {rel_err:.3e} > 1e-3); the timings may not compare "
            f"the same function"
        )

    if args.json:
        result = {
            "machine": {
                "processor": platform.processor() or platform.machine(),
                "cpu_count": os.cpu_count(),
                "torch_threads": torch.get_num_threads(),
                "loadavg_end": load,
            },
            "versions": {
                "jax": jax.__version__,
                "torch": torch.__version__,
                "diffusers": diffusers.__version__,
            },
            "config": {
                "preset": "wan2.1-t2v-1.3b",
                "layers": args.layers,
                "batch": args.batch,
                "frames": args.frames,
                "height": args.height,
                "width": args.width,
                "video_tokens": num_tokens,
                "text_len": cfg.text_len,
                "text_tokens_nonzero": args.text_tokens,
                "dtype": "float32",
                "params": num_params,
                "repeats": args.repeats,
                "interleaved": not args.sequential,
            },
            "jax": {
                "lower_s": lower_s,
                "compile_s": compile_s,
                "first_run_s": jax_first,
                "times_s": jax_times,
                "median_s": jax_med,
                "gflops_per_s": jax_gflops,
            },
            "torch": {
                "warmup_s": torch_warmup,
                "times_s": torch_times,
                "median_s": torch_med,
                "gflops_per_s": torch_gflops,
            },
            "flops": flops,
            "rel_err": rel_err,
            "max_abs_diff": max_abs,
            "ratio_torch_over_jax": ratio,
        }
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
