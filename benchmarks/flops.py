"""FLOP and byte model of the Wan DiT forward, and the hardware it is compared against.

One multiply-add counts as 2 FLOPs. Only matmuls are counted as FLOPs (norms, RoPE, softmax, GELU and
the modulation are O(L D) vector work, below 1% of the total at any real size; XLA's cost analysis
counts them, which is why `tests/test_flop_model.py` allows a few percent there). Notation: B batch
(2B with CFG), L video tokens, Lt = text_len (512; the context is zero-padded and attended to in
full), D dim, F ffn_dim, Dt text_dim, Ft freq_dim, N layers, C_in / C_out channels, pv patch volume
(4), m = 1 timestep per sample (T2V/I2V) or L (TI2V per-token timesteps).

    per layer   linear       2 L (6 D^2 + 2 D F)      self q, k, v, o; cross q, o; FFN fc1, fc2
                self_attn    4 L^2 D                  Q K^T and P V
                cross_attn   4 L Lt D
                text_kv      4 Lt D^2                 cross-attention k, v of the text (0 when cached)
    outside     embed_head   2 L D pv (C_in + C_out)  patch embedding and output head
                text_embed   2 Lt D (Dt + D)          two text-embedding linears (0 when cached)
                time_embed   2 m D (Ft + 7 D)         time MLP and the 6 D modulation projection
    forward     B (N per-layer + outside)

Bytes (HBM traffic lower bound of a fused implementation, c = compute-dtype bytes, p = parameter
bytes): the weights read once, plus per layer and token every matmul input and output once
(c (14 D + 2 F)), flash attention reading q, k, v and writing its output (c 6 D: self 4 D, cross 2 D;
the 512 text K/V rows are negligible), and the float32 residual stream read and written by the three
sub-blocks (4 * 6 D):

    bytes = p * params + B N L (c (20 D + 2 F) + 24 D)

Wan2.2-A14B check (performance-anchors.md section 4): 480p (L = 32,760) 1,678 TFLOP per forward,
720p (L = 75,600) 6,523 TFLOP; `tests/test_flop_model.py` asserts both to 0.1%.

Run `python benchmarks/flops.py` for the table of a preset (linear vs attention per token count, the
roofline floor on each device).
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cosjax.configs import DiTConfig, get_preset  # noqa: E402
from cosjax.geometry import latent_grid, num_tokens  # noqa: E402


@dataclasses.dataclass(frozen=True)
class Device:
    """Peak dense bf16 (and float32) matmul throughput and HBM bandwidth of one chip or GPU.

    Attributes:
      name: display name.
      bf16_tflops: dense bfloat16 peak, TFLOP/s (vendor spec sheet, no sparsity).
      f32_tflops: float32 peak without TF32 (GPU CUDA cores / CPU FMA units), TFLOP/s.
      hbm_gbps: memory bandwidth, GB/s.
      memory_gib: device memory, GiB.
      ici_gbps: bidirectional inter-chip bandwidth per chip, GB/s (TPU), 0 otherwise.
    """

    name: str
    bf16_tflops: float
    f32_tflops: float
    hbm_gbps: float
    memory_gib: float
    ici_gbps: float = 0.0


# Sources: NVIDIA H100/H200 datasheets (SXM, dense); Google Cloud TPU docs (v5p, v6e pages; TPU7x from
# performance-anchors.md section 3). "H100 measured" is the 800 TF/s dense-bf16 GEMM figure the
# anchors use for their floors.
DEVICES: dict[str, Device] = {
    "h100-sxm": Device("NVIDIA H100 SXM", 989.4, 66.9, 3350, 80),
    "h100-pcie": Device("NVIDIA H100 PCIe", 756.0, 51.2, 2000, 80),
    "h200": Device("NVIDIA H200", 989.4, 66.9, 4800, 141),
    "a100": Device("NVIDIA A100", 312.0, 19.5, 2039, 80),
    "tpu-v5p": Device("TPU v5p chip", 459.0, 0.0, 2765, 95, ici_gbps=1200),
    "tpu-v6e": Device("TPU v6e chip", 918.0, 0.0, 1638, 32, ici_gbps=800),
    "tpu-7x": Device("TPU7x chip", 2307.0, 0.0, 7370, 192, ici_gbps=1200),
}
H100_MEASURED_TFLOPS = 800.0


def detect_gpu(device_kind: str) -> Device | None:
    """The `DEVICES` entry for a JAX `device_kind` / torch device name (e.g. "NVIDIA H100 80GB HBM3")."""
    kind = device_kind.lower()
    if "h200" in kind:
        return DEVICES["h200"]
    if "h100" in kind:
        return DEVICES["h100-pcie" if "pcie" in kind else "h100-sxm"]
    if "a100" in kind:
        return DEVICES["a100"]
    return None


def cpu_device() -> Device:
    """An estimate for this CPU: cores x clock x FLOP/cycle (2 FMA pipes x 8 float32 lanes x 2 with
    AVX2/AVX-512 as on Zen 4, 16 without FMA); bf16 runs at the float32 rate on XLA:CPU."""
    import os

    cores = os.cpu_count() or 1
    mhz, flags = 2000.0, ""
    try:
        info = Path("/proc/cpuinfo").read_text()
        mhz = float(re.search(r"cpu MHz\s*:\s*([\d.]+)", info).group(1))
        flags = re.search(r"flags\s*:(.*)", info).group(1)
    except (OSError, AttributeError):
        pass
    per_cycle = 32 if " fma" in flags else 16
    tflops = cores * mhz * 1e6 * per_cycle / 1e12
    return Device(f"CPU ({cores} cores at {mhz:.0f} MHz, {per_cycle} FLOP/cycle)", tflops, tflops, 0.0, 0.0)


@dataclasses.dataclass(frozen=True)
class ForwardCost:
    """FLOPs (by part) and HBM bytes of one DiT forward; see the module docstring for the formulas."""

    linear: float
    self_attention: float
    cross_attention: float
    text_kv: float
    text_embed: float
    embed_head: float
    time_embed: float
    weight_bytes: float
    activation_bytes: float

    @property
    def attention(self) -> float:
        return self.self_attention + self.cross_attention

    @property
    def total(self) -> float:
        return (
            self.linear + self.attention + self.text_kv + self.text_embed + self.embed_head + self.time_embed
        )

    @property
    def bytes(self) -> float:
        return self.weight_bytes + self.activation_bytes

    def floor_seconds(self, device: Device, dtype: str = "bfloat16") -> float:
        """Roofline lower bound: max(FLOPs / peak, bytes / bandwidth) on one device."""
        peak = device.bf16_tflops if dtype == "bfloat16" else device.f32_tflops
        compute = self.total / (peak * 1e12) if peak else float("inf")
        memory = self.bytes / (device.hbm_gbps * 1e9) if device.hbm_gbps else 0.0
        return max(compute, memory)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d.update(attention=self.attention, total=self.total, bytes=self.bytes)
        return d


def param_count(config: DiTConfig) -> int:
    """Parameters of one expert, from the layer shapes (all Linear layers have a bias)."""
    d, f = config.dim, config.ffn_dim
    pv = config.patch_volume
    block = 8 * (d * d + d) + 4 * d + 2 * d + (d * f + f) + (f * d + d) + 6 * d  # attn, norms, ffn, mod
    outside = (
        (config.in_dim * pv * d + d)
        + (config.text_dim * d + d + d * d + d)
        + (config.freq_dim * d + d + d * d + d + d * 6 * d + 6 * d)
        + (d * pv * config.out_dim + pv * config.out_dim + 2 * d)
    )
    return config.num_layers * block + outside


def forward_cost(
    config: DiTConfig,
    tokens: int,
    batch: int = 1,
    cfg: bool = False,
    cached_text_kv: bool = False,
    text_len: int | None = None,
    compute_bytes: int = 2,
    param_bytes: int | None = None,
    per_token_t: bool | None = None,
) -> ForwardCost:
    """FLOPs and bytes of one forward over `batch` samples (x2 with `cfg`) of `tokens` video tokens.

    Args:
      config: the DiT architecture.
      tokens: L, video tokens per sample (after patchify).
      batch: samples; with cfg the forward runs 2 * batch (conditional + unconditional).
      cfg: classifier-free guidance as one doubled batch.
      cached_text_kv: the text embedding and cross-attention K/V come from the per-run cache.
      text_len: text tokens attended to (default config.text_len = 512).
      compute_bytes, param_bytes: bytes per element of activations and weights (param default = compute).
      per_token_t: per-token timesteps (default: config.model_type == "ti2v").
    """
    b = batch * (2 if cfg else 1)
    d, f, n = config.dim, config.ffn_dim, config.num_layers
    lt = config.text_len if text_len is None else text_len
    pv = config.patch_volume
    big_l = tokens
    m = big_l if (config.model_type == "ti2v" if per_token_t is None else per_token_t) else 1
    text = 0.0 if cached_text_kv else 1.0
    p = compute_bytes if param_bytes is None else param_bytes
    return ForwardCost(
        linear=b * n * 2.0 * big_l * (6 * d * d + 2 * d * f),
        self_attention=b * n * 4.0 * big_l * big_l * d,
        cross_attention=b * n * 4.0 * big_l * lt * d,
        text_kv=text * b * n * 4.0 * lt * d * d,
        text_embed=text * b * 2.0 * lt * d * (config.text_dim + d),
        embed_head=b * 2.0 * big_l * d * pv * (config.in_dim + config.out_dim),
        time_embed=b * 2.0 * m * d * (config.freq_dim + 7 * d),
        weight_bytes=float(p * param_count(config)),
        activation_bytes=float(b * n * big_l * (compute_bytes * (20 * d + 2 * f) + 24 * d)),
    )


def step_cost(config: DiTConfig, tokens: int, batch: int = 1, cfg: bool = True, **kwargs) -> ForwardCost:
    """One sampling step: the CFG pair as one forward of 2 * batch (the solver update is O(latent))."""
    return forward_cost(config, tokens, batch=batch, cfg=cfg, **kwargs)


def tokens_for(config: DiTConfig, frames: int, height: int, width: int, stride=(4, 8, 8)) -> int:
    """Video tokens of a frames x height x width video: latent grid / patch (4k+1 frames)."""
    return num_tokens(latent_grid(frames, height, width, stride), config.patch_size)


@dataclasses.dataclass(frozen=True)
class StepEstimate:
    """Expected seconds of one CFG sampling step on a slice (see `estimate_step`)."""

    chips: int
    mesh: dict
    floor_s: float
    linear_s: float
    attention_s: float
    comm_bytes: float
    comm_s: float
    exposed_comm_s: float

    @property
    def total_s(self) -> float:
        return self.linear_s + self.attention_s + self.exposed_comm_s

    @property
    def share_of_peak(self) -> float:
        return self.floor_s / self.total_s


def estimate_step(
    config: DiTConfig,
    tokens: int,
    device: Device,
    mesh: dict,
    params_over_context: bool = True,
    linear_eff: float = 0.80,
    attention_eff: float = 0.60,
    ici_eff: float = 0.5,
    overlap: float = 0.5,
) -> StepEstimate:
    """Per-step time of a CFG step (batch 1, text K/V cached, bf16) on `chips` = prod(mesh) chips.

    Compute: each chip does 1/chips of the step's FLOPs, matmuls at `linear_eff` of peak and attention
    at `attention_eff` (the softmax's exp runs on the VPU, anchors section 4). Communication per chip:
      context c (Ulysses): 4 all-to-alls per layer (q, k, v, out) of [b, L/c, D] bf16, (c-1)/c leaves;
      tensor t: 3 all-reduces per layer of [b, L/c, D] bf16, 2 (t-1)/t each;
      FSDP over f = fsdp (x context when `params_over_context`): one bf16 all-gather of every layer's
        weights per forward, (f-1)/f of them arriving.
    Bandwidth: half the bidirectional ICI figure times `ici_eff`; `overlap` of it hides behind compute.
    """
    data, fsdp = mesh.get("data", 1), mesh.get("fsdp", 1)
    context, tensor = mesh.get("context", 1), mesh.get("tensor", 1)
    chips = data * fsdp * context * tensor
    step = forward_cost(config, tokens, cfg=True, cached_text_kv=True)
    peak = device.bf16_tflops * 1e12
    b = max(1, 2 // data)  # CFG pair split over data
    act = b * (tokens / context) * config.dim * 2  # one [b, L/c, D] bf16 activation
    n = config.num_layers
    comm = n * 4 * act * (context - 1) / context + n * 3 * act * 2 * (tensor - 1) / tensor
    f = fsdp * (context if params_over_context else 1)
    layer_weights = 2 * (param_count(config) - param_count(dataclasses.replace(config, num_layers=0))) / n
    comm += n * layer_weights / tensor * (f - 1) / f
    comm_s = comm / (device.ici_gbps / 2 * 1e9 * ici_eff) if device.ici_gbps else 0.0
    return StepEstimate(
        chips=chips,
        mesh=dict(mesh),
        floor_s=step.total / (chips * peak),
        linear_s=(step.total - step.attention) / (chips * peak * linear_eff),
        attention_s=step.attention / (chips * peak * attention_eff),
        comm_bytes=comm,
        comm_s=comm_s,
        exposed_comm_s=comm_s * (1 - overlap),
    )


def tpu_plan(preset: str = "wan2.2-t2v-a14b", frames: int = 81, size=(1280, 720)) -> str:
    """The TPU plan table of benchmarks/README.md: v6e-8 and v5p-8 at 720p, by mesh."""
    config = get_preset(preset).dit
    tokens = tokens_for(config, frames, size[1], size[0])
    rows = [
        ("v6e-8", "tpu-v6e", {"data": 2, "context": 4}, True, "recommended (params FSDP over context)"),
        ("v6e-8", "tpu-v6e", {"data": 2, "tensor": 4}, False, "runs with today's param_spec"),
        ("v5p-8", "tpu-v5p", {"data": 2, "context": 2}, False, "recommended (params replicated)"),
        ("v5p-8", "tpu-v5p", {"data": 2, "tensor": 2}, False, "alternative"),
    ]
    out = [
        f"{preset}, {frames} frames {size[0]}x{size[1]} = {tokens} tokens, CFG step, text K/V cached, bf16",
        f"{'slice':<7}{'mesh':<22}{'floor s':>8}{'linear s':>9}{'attn s':>8}{'comm GB':>8}{'exp. comm s':>12}"
        f"{'step s':>8}{'% peak':>8}{'40 steps s':>11}  note",
    ]
    for name, dev, mesh, over_ctx, note in rows:
        e = estimate_step(config, tokens, DEVICES[dev], mesh, params_over_context=over_ctx)
        m = " x ".join(f"{k}{v}" for k, v in mesh.items())
        line = f"{name:<7}{m:<22}{e.floor_s:>8.2f}{e.linear_s:>9.2f}{e.attention_s:>8.2f}"
        line += f"{e.comm_bytes / 1e9:>8.1f}{e.exposed_comm_s:>12.2f}{e.total_s:>8.2f}"
        out.append(line + f"{100 * e.share_of_peak:>8.1f}{40 * e.total_s:>11.0f}  {note}")
    return "\n".join(out)


def table(config: DiTConfig, token_counts, cfg: bool = False, cached: bool = False) -> str:
    """A text table of the cost per token count: linear vs attention, total, bytes, floors."""
    devs = [DEVICES[k] for k in ("h100-sxm", "tpu-v5p", "tpu-v6e", "tpu-7x")]
    head = f"{'tokens':>8}{'linear TF':>11}{'attn TF':>10}{'other TF':>10}{'total TF':>10}{'attn %':>8}"
    head += f"{'GB':>8}{'FLOP/B':>8}" + "".join(f"{d.name.split()[-2] + ' s':>10}" for d in devs)
    rows = [head, "-" * len(head)]
    for n_tok in token_counts:
        c = forward_cost(config, n_tok, cfg=cfg, cached_text_kv=cached)
        other = c.total - c.linear - c.attention
        row = f"{n_tok:>8}{c.linear / 1e12:>11.1f}{c.attention / 1e12:>10.1f}{other / 1e12:>10.2f}"
        row += f"{c.total / 1e12:>10.1f}{100 * c.attention / c.total:>8.1f}{c.bytes / 1e9:>8.1f}"
        row += f"{c.total / c.bytes:>8.0f}" + "".join(f"{c.floor_seconds(d):>10.2f}" for d in devs)
        rows.append(row)
    return "\n".join(rows)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--preset", default="wan2.2-t2v-a14b")
    p.add_argument("--tokens", type=int, nargs="*", default=None, help="default: 480p and 720p, 81 frames")
    p.add_argument("--cfg", action="store_true", help="a CFG step (batch 2) instead of one forward")
    p.add_argument("--cached", action="store_true", help="text K/V from the per-run cache")
    p.add_argument("--tpu-plan", action="store_true", help="the v6e-8 / v5p-8 720p step estimates")
    args = p.parse_args()
    if args.tpu_plan:
        print(tpu_plan(args.preset))
        return
    preset = get_preset(args.preset)
    tokens = args.tokens or [
        tokens_for(preset.dit, 81, 480, 832, preset.vae_stride),
        tokens_for(preset.dit, 81, 720, 1280, preset.vae_stride),
    ]
    print(
        f"{args.preset}: {param_count(preset.dit) / 1e9:.3f} B params per expert; bf16; floors at 100% peak"
    )
    print(table(preset.dit, tokens, cfg=args.cfg, cached=args.cached))


if __name__ == "__main__":
    main()
