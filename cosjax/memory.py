"""Per-device memory planner for Wan DiT sampling, checked before anything is compiled.

`plan_memory(...)` estimates, per device of a (data, fsdp, context, tensor) mesh, the bytes one
sampling run holds at its peak: every expert's parameters (all resident), the one transformer block
that is materialised in full at a time, the activations of one DiT forward at its peak, the forward's
inputs and output, and the sampler state. `check_fits(plan, device_bytes)` raises a ValueError before
compiling when the total does not fit, naming what to change (the smallest fsdp or context size that
fits, data=2 for the CFG pair, bfloat16, flash attention, fewer frames, a smaller size, or a combined
setting). The text encoder and the VAE run before and after sampling and are not counted.

Notation (per device unless said otherwise):
  B = batch * (2 with CFG), the DiT batch of one forward; b = ceil(B / data) (batch shards over data
    only; fsdp devices hold the same activations).
  (T', H', W') = ((frames - 1) / s_t + 1, height / s_h, width / s_w), the latent grid (VAE stride s:
    4x8x8, TI2V 4x16x16); L = (T' / p_t) (H' / p_h) (W' / p_w) tokens per sample (patch 1x2x2).
  l = ceil(L / context), tokens per device (the sequence is padded to a multiple of context).
  D, F, N, d, F_t = dim, ffn_dim, num_heads, head_dim, freq_dim; L_txt = text_len = 512 text tokens.
  N_a = N / (context * tensor): heads per device inside self-attention. Ulysses all-to-alls trade the
    sequence shard for a head shard, so a device attends N_a heads over all L tokens (the DiT requires
    N divisible by context * tensor when context > 1).
  c, p = bytes per element of the compute and parameter dtypes (the residual stream, norms,
    modulation and softmax logits are float32: 4 bytes).

Parameters: every leaf sharded as `cosjax.parallel.param_spec` places it (kernels over fsdp on one
axis and tensor on the other; an axis that does not divide stays replicated):
  parameters    = num_experts * sum_leaves prod_i ceil(n_i / k_i) * p
  layer_weights = one block's leaves without the fsdp split (the FSDP all-gather; with fsdp = 1 the
                  scan's dynamic slice of the stacked weights) * p, plus a compute-dtype copy when
                  c != p. Counted in full at the in-scan peak; an upper bound where XLA gathers or
                  slices weight by weight.

Activations: a liveness model of one forward. The layer scan keeps one block's intermediates alive at
a time, so the peak is what is alive for the whole forward plus the largest phase:
  persistent  residual    4 b l D                  float32 residual stream (scan carry)
              modulation  4 b m (7 D + F_t)        e0 [b, m, 6, D], e and the sinusoid; m = l for
                                                   TI2V per-token timesteps, 1 otherwise
              text        c b L_txt D              embedded text context
              rope        4 l d                    cos/sin tables [l, d / 2]
  embed       text_cast   c b L_txt text_dim       the float32 encoder output cast (0 when c = 4)
              text_hidden c b L_txt D              the GELU input of the text embedding
  self_attn   norm_out    c b l D                  modulated LayerNorm output (q/k/v input)
              qkv         3 c b l D / tensor
              attn_scores XLA:   (4 + c) b N_a L^2  float32 logits and the probabilities
                          flash: 4 b N_a (2 L + 512^2)  row max / sum and one 512x512 tile
              attn_out    c b l D / tensor
  cross_attn  q           c b l D
              text_kv     2 c b L_txt D
              cross_scores XLA: (4 + c) b (N / tensor) l L_txt; flash as above with l
  ffn         ffn_hidden  2 c b l F / tensor       pre- and post-GELU hidden
              ffn_io      (c + 4) b l D            FFN input and the updated float32 residual
  activations = sum(persistent) + max over phases, where in-scan phases also carry layer_weights.

Forward inputs/output: b (2 * 4 C T' H' W' + 4 C_y T' H' W' + 4 t + 4 L_txt text_dim): latents in
and velocity out (float32), the I2V conditioning y (C_y = 20), timesteps (t = L for TI2V, else 1) and
the float32 text-encoder output. Sampler state: batch (4 (1 + h) C T' H' W' + 4 C_y T' H' W' +
(1 + cfg) 4 L_txt text_dim), with h = 3 UniPC history buffers (0 for Euler) and prompt plus negative
embeddings, plus the per-run text K/V cache the sampler computes once per expert (`WanDiT.encode_text`):
num_experts * N_layers * 2 * b * L_txt * ceil(D / tensor) * c (keys and values of every layer).

  forward_peak = parameters + layer_weights + activations + forward_io (+ platform_extra)
  total        = (forward_peak + sampler_state) * safety_factor      (1.2 by default)

See `CALIBRATION` for how this was checked against XLA's compiled memory analysis.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import AbstractMesh

from cosjax.configs import DiTConfig, get_preset, preset_for
from cosjax.geometry import latent_grid, num_tokens, padded_tokens, tokens_per_shard
from cosjax.parallel import AXES, param_spec

GiB = 2**30
MESH_AXES = AXES  # ("data", "fsdp", "context", "tensor")
FLASH_BLOCK = 512
DEFAULT_SAFETY_FACTOR = 1.2

CALIBRATION = """How the activation model was checked (XLA:CPU, jax 0.10.2, 2026).

For 240 small DiTs (dim 256-1024, 2-8 layers, 2-8 heads, FFN 1024-8192, L = 64-2048 tokens, batch
1 and 2, float32 and bfloat16, T2V and TI2V per-token timesteps) the forward `WanDiT.apply` was
lowered with abstract parameters and compiled; `memory_analysis()` gives argument + temp + output
bytes, compared with `MemoryPlan.forward_peak` (one expert, one device, platform="cpu").

- parameters + forward_io equal XLA's argument + output bytes exactly in every config.
- Activations: the terms above are derived from the block body, not fitted. Data fixed three
  structural choices: the softmax probabilities are a second [b, N_a, L, L] buffer next to the
  float32 logits; the FFN hidden is counted twice (pre/post GELU); before the layer scan (the "embed"
  phase, the peak only for tiny L) no layer weights are alive.
- XLA:CPU's default YNNPACK fusion computes QK^T, softmax and PV in one kernel and never writes the
  logits, unlike XLA on GPU/TPU. The comparison compiles with
  `compiler_options={"xla_cpu_experimental_ynn_fusion_type": ""}`, which materialises them as
  GPU/TPU XLA does; with CPU defaults the estimate is up to 2.5x high for attention-bound configs.
- XLA:CPU runs bfloat16 dots in float32: it keeps float32 copies of the weights (the stacked block
  weights hoisted out of the scan) and float32 matmul operands. platform="cpu" adds exactly that
  (`platform_extra` = one expert's weights in float32; c = 4 inside the forward). On GPU/TPU
  (platform="accelerator") bfloat16 activations are 2 bytes; that case is not measured here.
- Result: estimate / XLA = 0.99 - 1.18 (median 1.07). The over-estimate comes from layer_weights:
  XLA:CPU slices each weight just before its matmul, so at the attention peak only part of a layer
  is alive; under FSDP a gathered layer is alive in full, so the term is kept.
- Sharded (8 fake CPU devices, the same DiT at L = 1024, CFG, float32): per-device arguments +
  output equal parameters + forward_io within 0.7% (exactly for fsdp=8); the estimate is an upper
  bound of the per-device peak, 1.26x at fsdp=8, 1.09x at fsdp=2 x context=4, 1.06x at data=2 x
  context=2 x tensor=2 (GSPMD gathers weights one matmul at a time and shards some activations
  that the model counts whole). Parameter placement equals `NamedSharding.shard_shape`.
- Not measured: collective buffers, the flash backend (its term is the kernel's O(L) row statistics,
  an assumption) and GPU/TPU fusion decisions; the safety factor is meant to cover such scratch and
  allocator fragmentation.
"""


def _itemsize(dtype) -> int:
    return jnp.dtype(dtype).itemsize


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


@dataclasses.dataclass(frozen=True)
class MemoryPlan:
    """Per-device bytes of one sampling run (see the module docstring for every formula).

    Attributes:
      config, num_experts, frames, height, width, mesh_shape, param_dtype, compute_dtype, cfg, batch,
        attention, vae_stride, solver, platform, safety_factor: the inputs (kept so that
        `suggest_fixes` can re-plan with one setting changed).
      latent_grid: (T', H', W') latent frames, rows and columns.
      tokens: L, DiT tokens per sample; tokens_per_device: l = ceil(L / context).
      batch_per_device: b = ceil(B / data), B = batch * (2 if cfg).
      heads_per_device: N_a = ceil(N / (context * tensor)), heads a device attends over all L tokens.
      parameters: bytes of all experts' parameters, each leaf sharded as `param_spec` places it.
      layer_weights: one block's weights in full (divided by tensor): the FSDP all-gather when
        fsdp > 1, the scan's dynamic slice otherwise; plus a compute-dtype copy when it differs.
      activations: the peak of one forward's intermediates (max over phases + persistent terms).
      activation_terms: name -> bytes of every term at that peak.
      peak_phase: "embed" (before the layer scan), "self_attn", "cross_attn" or "ffn".
      forward_io: a forward's inputs and output (latents, timesteps, text encoder output, velocity).
      sampler_state: latents, solver history and the conditioning the sampling loop carries.
      platform_extra: bytes a platform adds that the model itself does not need (XLA:CPU runs
        bfloat16 matmuls in float32 and keeps a float32 copy of the weights); 0 on GPU/TPU.
      notes: warnings (batch or tokens padded to the data or context axis).
    """

    config: DiTConfig
    num_experts: int
    frames: int
    height: int
    width: int
    mesh_shape: Mapping[str, int]
    param_dtype: jnp.dtype
    compute_dtype: jnp.dtype
    cfg: bool
    batch: int
    attention: str
    vae_stride: tuple[int, int, int]
    solver: str
    platform: str
    safety_factor: float
    latent_grid: tuple[int, int, int]
    tokens: int
    tokens_per_device: int
    batch_per_device: int
    heads_per_device: int
    parameters: int
    layer_weights: int
    activations: int
    activation_terms: Mapping[str, int]
    peak_phase: str
    forward_io: int
    sampler_state: int
    platform_extra: int
    notes: tuple[str, ...] = ()

    @property
    def forward_peak(self) -> int:
        """Bytes of one DiT forward at its peak, unscaled: what XLA reports as arguments + temp + output
        for `WanDiT.apply` (parameters + layer weights + activations + inputs/outputs)."""
        layer = self.layer_weights if self.peak_phase != "embed" else 0
        return self.parameters + layer + self.activations + self.forward_io + self.platform_extra

    @property
    def total(self) -> int:
        """(forward_peak + sampler_state) * safety_factor: the budget `check_fits` compares."""
        return int(math.ceil((self.forward_peak + self.sampler_state) * self.safety_factor))

    @property
    def devices(self) -> int:
        return int(np.prod([self.mesh_shape[a] for a in MESH_AXES]))

    def summary(self) -> str:
        """A human-readable table of the terms, in GiB per device."""
        g = lambda n: f"{n / GiB:8.2f} GiB"  # noqa: E731
        mesh = " x ".join(f"{a}={self.mesh_shape[a]}" for a in MESH_AXES)
        lines = [
            f"memory plan: {self.num_experts} expert(s) dim={self.config.dim} "
            f"layers={self.config.num_layers}, {self.frames} frames {self.width}x{self.height}, "
            f"batch {self.batch}{' + CFG' if self.cfg else ''}, "
            f"params {jnp.dtype(self.param_dtype).name} / compute {jnp.dtype(self.compute_dtype).name}, "
            f"attention={self.attention}, mesh {mesh}",
            f"  tokens L={self.tokens} (grid {self.latent_grid}), per device l={self.tokens_per_device}, "
            f"b={self.batch_per_device}, heads attended per device={self.heads_per_device}",
            f"  parameters       {g(self.parameters)}",
            f"  layer weights    {g(self.layer_weights)}",
            f"  activations      {g(self.activations)}  (peak in {self.peak_phase})",
        ]
        for name, n in self.activation_terms.items():
            lines.append(f"    {name:<15}{g(n)}")
        lines += [
            f"  forward in/out   {g(self.forward_io)}",
            f"  sampler state    {g(self.sampler_state)}",
        ]
        if self.platform_extra:
            lines.append(f"  {self.platform} extra     {g(self.platform_extra)}")
        lines.append(f"  total x{self.safety_factor:<4}     {g(self.total)}")
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


@functools.lru_cache(maxsize=32)
def _param_shapes(config: DiTConfig) -> tuple[tuple[tuple[str, ...], tuple[int, ...]], ...]:
    """(path, shape) of every parameter leaf of one expert, from `jax.eval_shape` (nothing allocated)."""
    from cosjax.models.dit import abstract_params

    tree = abstract_params(config, jnp.float32)
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return tuple((tuple(str(getattr(k, "key", k)) for k in path), tuple(leaf.shape)) for path, leaf in leaves)


def _shard_elements(shape: tuple[int, ...], spec, sizes: Mapping[str, int], drop: str | None = None) -> int:
    """Elements of one device's shard of a leaf with PartitionSpec `spec`: prod_i ceil(n_i / k_i), k_i
    the product of the mesh axes named for dimension i (without the axis `drop`)."""
    total = 1
    for i, n in enumerate(shape):
        entry = spec[i] if i < len(spec) else None
        names = () if entry is None else ((entry,) if isinstance(entry, str) else tuple(entry))
        k = int(np.prod([sizes[a] for a in names if a != drop], dtype=np.int64))
        total *= _ceil_div(n, k)
    return int(total)


def parameter_bytes(
    config: DiTConfig, param_dtype, mesh_shape: Mapping[str, int] | None = None
) -> tuple[int, int]:
    """(one expert's parameter bytes per device, one block's weight bytes after the FSDP all-gather).

    Each leaf is sharded as `cosjax.parallel.param_spec` places it (kernels over fsdp on one axis and
    tensor on the other, axes that do not divide stay replicated, the layer axis never split):
      per device  = sum_leaves prod_i ceil(n_i / k_i) * p
      layer       = sum_block_leaves (the same without the layer axis and without fsdp) * p
    """
    sizes = {a: 1 for a in AXES}
    sizes.update(mesh_shape or {})
    mesh = AbstractMesh(tuple(sizes[a] for a in AXES), AXES)
    size = _itemsize(param_dtype)
    per_device, layer = 0, 0
    for path, shape in _param_shapes(config):
        spec = tuple(param_spec(path, shape, mesh))
        per_device += _shard_elements(shape, spec, sizes) * size
        if path[0] == "blocks":
            layer += _shard_elements(shape[1:], spec[1:], sizes, drop="fsdp") * size
    return per_device, layer


def _activation_terms(
    config: DiTConfig,
    b: int,
    seq: int,
    seq_local: int,
    heads: int,
    tensor: int,
    compute_bytes: int,
    attention: str,
    cpu_upcast: bool,
) -> tuple[dict[str, int], dict[str, dict[str, int]]]:
    """(persistent terms, phase -> terms) of one forward, in bytes; formulas in the module docstring.

    `cpu_upcast`: XLA:CPU runs bfloat16 dots in float32, so every matmul operand and output inside
    the forward is float32 (c = 4) and the text embedding sees a float32 copy of its bf16 input.
    """
    d_model, ffn, txt, tdim = config.dim, config.ffn_dim, config.text_len, config.text_dim
    c = 4 if cpu_upcast else compute_bytes
    m = seq_local if config.model_type == "ti2v" else 1
    persistent = {
        "residual": 4 * b * seq_local * d_model,
        "modulation": 4 * b * m * (7 * d_model + config.freq_dim),
        "text_context": c * b * txt * d_model,
        "rope": 4 * seq_local * config.head_dim,
    }
    # the float32 encoder output cast to the compute dtype (a no-op in float32); XLA:CPU fuses the
    # round trip float32 -> bf16 -> float32 (its dot runs in float32) into one float32 copy
    text_cast = (c if compute_bytes != 4 else 0) * b * txt * tdim
    cross_heads = _ceil_div(config.num_heads, tensor)  # cross-attention is local: l queries, 512 keys
    if attention == "xla":
        scores = (4 + c) * b * heads * seq * seq
        cross_scores = (4 + c) * b * cross_heads * seq_local * txt
    elif attention == "flash":
        scores = 4 * b * heads * (2 * seq + FLASH_BLOCK * FLASH_BLOCK)
        cross_scores = 4 * b * cross_heads * (2 * seq_local + FLASH_BLOCK * FLASH_BLOCK)
    else:
        raise ValueError(f"attention must be 'xla' or 'flash', got {attention!r}")
    phases = {
        "embed": {"text_cast": text_cast, "text_hidden": c * b * txt * d_model},
        "self_attn": {
            "norm_out": c * b * seq_local * d_model,
            "qkv": 3 * c * b * seq_local * _ceil_div(d_model, tensor),
            "attn_scores": scores,
            "attn_out": c * b * seq_local * _ceil_div(d_model, tensor),
        },
        "cross_attn": {
            "q": c * b * seq_local * d_model,
            "text_kv": 2 * c * b * txt * d_model,
            "cross_scores": cross_scores,
        },
        "ffn": {
            "ffn_hidden": 2 * c * b * seq_local * _ceil_div(ffn, tensor),
            "ffn_io": (c + 4) * b * seq_local * d_model,
        },
    }
    return persistent, phases


def plan_memory(
    config: DiTConfig,
    num_experts: int,
    frames: int,
    height: int,
    width: int,
    mesh_shape: Mapping[str, int] | None = None,
    param_dtype=jnp.bfloat16,
    compute_dtype=jnp.bfloat16,
    cfg: bool = True,
    batch: int = 1,
    attention: str = "xla",
    *,
    vae_stride: tuple[int, int, int] | None = None,
    solver: str = "unipc",
    platform: str = "accelerator",
    safety_factor: float = DEFAULT_SAFETY_FACTOR,
) -> MemoryPlan:
    """Estimates per-device memory of sampling `frames` x `height` x `width` video.

    Args:
      config: the DiT architecture of one expert.
      num_experts: experts resident on device (2 for the A14B mixtures, all kept resident).
      frames, height, width: pixel-space video size (frames = 4k + 1).
      mesh_shape: {"data", "fsdp", "context", "tensor"} sizes (missing axes are 1; None: one device).
      param_dtype, compute_dtype: storage dtype of the weights, dtype of the matmuls.
      cfg: classifier-free guidance (doubles the DiT batch).
      batch: videos per run.
      attention: "xla" (materialises [b, N_a, L, L] float32 logits) or "flash" (O(L) + one tile).
      vae_stride: latent stride (t, h, w); None: that of the model's preset (`configs.preset_for`).
      solver: "unipc" (3 latent-sized float32 history buffers) or "euler" (none).
      platform: "accelerator" (GPU/TPU) or "cpu", which adds XLA:CPU's float32 execution of
        bfloat16 matmuls (a float32 copy of one expert's weights, float32 activations).
      safety_factor: multiplies the sum in `MemoryPlan.total` (allocator fragmentation, collective
        buffers, XLA scratch the model does not see).

    Returns:
      the `MemoryPlan`.
    """
    mesh = {a: 1 for a in MESH_AXES}
    for axis, size in (mesh_shape or {}).items():
        if axis not in mesh:
            raise ValueError(f"unknown mesh axis {axis!r}; expected a subset of {MESH_AXES}")
        if int(size) < 1:
            raise ValueError(f"mesh axis {axis} must be >= 1, got {size}")
        mesh[axis] = int(size)
    if num_experts < 1 or batch < 1:
        raise ValueError(f"num_experts and batch must be >= 1, got {num_experts} and {batch}")
    if platform not in ("accelerator", "cpu"):
        raise ValueError(f"platform must be 'accelerator' or 'cpu', got {platform!r}")
    if solver not in ("unipc", "euler"):
        raise ValueError(f"solver must be 'unipc' or 'euler', got {solver!r}")
    if vae_stride is None:
        vae_stride = preset_for(config, num_experts).vae_stride
    grid = latent_grid(frames, height, width, vae_stride)
    seq = num_tokens(grid, config.patch_size)
    dit_batch = batch * (2 if cfg else 1)
    data, fsdp, context, tensor = (mesh[a] for a in MESH_AXES)
    b = _ceil_div(dit_batch, data)
    seq_local = tokens_per_shard(seq, context)
    heads = _ceil_div(config.num_heads, context * tensor)
    notes = []
    if dit_batch % data:
        notes.append(f"DiT batch {dit_batch} does not divide over data={data}: {b} per device (padded)")
    if seq % context:
        notes.append(
            f"{seq} tokens do not divide over context={context}: padded to {padded_tokens(seq, context)}"
        )
    if context > 1 and config.num_heads % (context * tensor):
        raise ValueError(
            f"context parallelism (Ulysses) needs num_heads ({config.num_heads}) divisible by context x "
            f"tensor ({context * tensor}); with tensor={tensor} use one of context = "
            + ", ".join(str(k) for k in _context_sizes(config.num_heads, tensor))
        )

    p_size, c_size = _itemsize(param_dtype), _itemsize(compute_dtype)
    cpu_upcast = platform == "cpu" and c_size < 4
    expert_bytes, layer = parameter_bytes(config, param_dtype, mesh)
    parameters = num_experts * expert_bytes
    layer_weights = layer + (layer // p_size * c_size if c_size != p_size else 0)
    platform_extra = 0
    if cpu_upcast:  # float32 copies of the weights (the stacked ones hoisted out of the layer scan)
        platform_extra, _ = parameter_bytes(config, jnp.float32, mesh)

    persistent, phases = _activation_terms(
        config, b, seq, seq_local, heads, tensor, c_size, attention, cpu_upcast
    )
    # one layer's weights are not materialised yet while the text is embedded
    peak_phase = max(phases, key=lambda k: sum(phases[k].values()) + (layer_weights if k != "embed" else 0))
    terms = {**persistent, **phases[peak_phase]}
    activations = sum(terms.values())

    latent = int(np.prod(grid)) * config.out_dim * 4  # one float32 latent video [C, T', H', W']
    cond_in = int(np.prod(grid)) * (config.in_dim - config.out_dim) * 4 if config.model_type == "i2v" else 0
    t_elems = seq if config.model_type == "ti2v" else 1
    text_in = config.text_len * config.text_dim * 4
    forward_io = b * (2 * latent + cond_in + 4 * t_elems + text_in)
    history = 3 if solver == "unipc" else 0
    sampler_state = batch * ((1 + history) * latent + cond_in + (2 if cfg else 1) * text_in)
    text_cache = num_experts * config.num_layers * 2 * b * config.text_len * _ceil_div(config.dim, tensor)
    sampler_state += text_cache * (4 if cpu_upcast else c_size)

    return MemoryPlan(
        config=config,
        num_experts=num_experts,
        frames=frames,
        height=height,
        width=width,
        mesh_shape=mesh,
        param_dtype=jnp.dtype(param_dtype),
        compute_dtype=jnp.dtype(compute_dtype),
        cfg=cfg,
        batch=batch,
        attention=attention,
        vae_stride=tuple(vae_stride),
        solver=solver,
        platform=platform,
        safety_factor=safety_factor,
        latent_grid=grid,
        tokens=seq,
        tokens_per_device=seq_local,
        batch_per_device=b,
        heads_per_device=heads,
        parameters=parameters,
        layer_weights=layer_weights,
        activations=activations,
        activation_terms=terms,
        peak_phase=peak_phase,
        forward_io=forward_io,
        sampler_state=sampler_state,
        platform_extra=platform_extra,
        notes=tuple(notes),
    )


def _replan(plan: MemoryPlan, **changes) -> MemoryPlan:
    """`plan_memory` with the inputs of `plan`, some changed (mesh axes may be given by name)."""
    mesh = dict(plan.mesh_shape)
    for axis in MESH_AXES:
        if axis in changes:
            mesh[axis] = changes.pop(axis)
    args = dict(
        config=plan.config,
        num_experts=plan.num_experts,
        frames=plan.frames,
        height=plan.height,
        width=plan.width,
        mesh_shape=mesh,
        param_dtype=plan.param_dtype,
        compute_dtype=plan.compute_dtype,
        cfg=plan.cfg,
        batch=plan.batch,
        attention=plan.attention,
        vae_stride=plan.vae_stride,
        solver=plan.solver,
        platform=plan.platform,
        safety_factor=plan.safety_factor,
    )
    args.update(changes)
    return plan_memory(**args)


def _context_sizes(num_heads: int, tensor: int) -> list[int]:
    """Context sizes Ulysses can use with this tensor size: 1 and every k with N % (k tensor) == 0."""
    return [k for k in range(1, num_heads + 1) if k == 1 or num_heads % (k * tensor) == 0]


POWERS_OF_TWO = tuple(2**i for i in range(11))  # fsdp sizes tried: 1 ... 1024


def suggest_fixes(plan: MemoryPlan, device_bytes: int) -> list[str]:
    """Single changes that make `plan` fit in `device_bytes`, each as a sentence; a combined
    setting (bfloat16 + flash + the smallest fsdp x context) when no single change is enough."""
    fits = lambda p: p.total <= device_bytes  # noqa: E731
    gib = lambda p: f"{p.total / GiB:.1f} GiB"  # noqa: E731
    mesh = plan.mesh_shape
    fixes = []
    for size in POWERS_OF_TWO:
        if size > mesh["fsdp"] and fits(p := _replan(plan, fsdp=size)):
            fixes.append(
                f"shard parameters over more devices: fsdp={size} (now {mesh['fsdp']}; parameters "
                f"{p.parameters / GiB:.1f} GiB per device, total {gib(p)})"
            )
            break
    for size in _context_sizes(plan.config.num_heads, mesh["tensor"]):
        if size > mesh["context"] and fits(p := _replan(plan, context=size)):
            fixes.append(
                f"split the {plan.tokens} tokens over more devices: context={size} (now {mesh['context']}; "
                f"activations {p.activations / GiB:.1f} GiB per device, total {gib(p)})"
            )
            break
    if plan.cfg and mesh["data"] == 1 and fits(p := _replan(plan, data=2)):
        fixes.append(f"run the CFG pair on two devices: data=2 (total {gib(p)})")
    if (plan.param_dtype.itemsize > 2 or plan.compute_dtype.itemsize > 2) and fits(
        p := _replan(plan, param_dtype=jnp.bfloat16, compute_dtype=jnp.bfloat16)
    ):
        fixes.append(f"use bfloat16 parameters and matmuls (total {gib(p)})")
    if plan.attention == "xla" and fits(p := _replan(plan, attention="flash")):
        fixes.append(
            "use flash attention: attention='flash' (the XLA backend materialises "
            f"{plan.activation_terms.get('attn_scores', 0) / GiB:.1f} GiB of attention logits; "
            f"total {gib(p)})"
        )
    # fewer frames / a smaller size: offered only while at least a quarter of the tokens remain
    st = plan.vae_stride[0]
    for frames in range(plan.frames - st, 0, -st):
        if _replan(plan, frames=frames).tokens * 4 < plan.tokens:
            break
        if fits(p := _replan(plan, frames=frames)):
            fixes.append(f"generate fewer frames: frames <= {frames} (now {plan.frames}; total {gib(p)})")
            break
    q_h = plan.vae_stride[1] * plan.config.patch_size[1]
    q_w = plan.vae_stride[2] * plan.config.patch_size[2]
    for height in range(plan.height - q_h, 0, -q_h):
        width = max(q_w, round(plan.width * height / plan.height / q_w) * q_w)
        p = _replan(plan, height=height, width=width)
        if p.tokens * 4 < plan.tokens:
            break
        if fits(p):
            fixes.append(
                f"use a smaller size: {width}x{height} (now {plan.width}x{plan.height}; total {gib(p)})"
            )
            break
    if fixes:
        return fixes
    # no single change is enough: bfloat16 + flash (+ data=2 for CFG), then the fewest devices
    base = dict(param_dtype=jnp.bfloat16, compute_dtype=jnp.bfloat16, attention="flash")
    best = None
    for data in sorted({mesh["data"], max(mesh["data"], 2) if plan.cfg else mesh["data"]}):
        for fsdp in (f for f in POWERS_OF_TWO if f >= mesh["fsdp"]):
            for context in (
                k for k in _context_sizes(plan.config.num_heads, mesh["tensor"]) if k >= mesh["context"]
            ):
                p = _replan(plan, data=data, fsdp=fsdp, context=context, **base)
                if fits(p) and (best is None or (p.devices, p.total) < (best.devices, best.total)):
                    best = p
    if best is None:
        return [
            "nothing tried fits (up to fsdp=1024 with context parallel, bfloat16 and flash attention): "
            "generate fewer frames or a smaller size as well"
        ]
    m = best.mesh_shape
    return [
        "combine: bfloat16 parameters and matmuls, attention='flash' and the mesh "
        + ", ".join(f"{a}={m[a]}" for a in MESH_AXES)
        + f" ({best.devices} devices; total {gib(best)} per device)"
    ]


def check_fits(plan: MemoryPlan, device_bytes: int) -> MemoryPlan:
    """Returns `plan` when `plan.total <= device_bytes`; otherwise raises a ValueError (before any
    compilation) with the breakdown and the changes that would make it fit (`suggest_fixes`)."""
    if plan.total <= device_bytes:
        return plan
    fixes = suggest_fixes(plan, device_bytes)
    raise ValueError(
        f"Wan DiT sampling needs about {plan.total / GiB:.1f} GiB per device (x{plan.safety_factor} "
        f"safety) but the device has {device_bytes / GiB:.1f} GiB.\n"
        + plan.summary()
        + "\nTo fit, change one of:\n"
        + "\n".join(f"  - {fix}" for fix in fixes)
    )


def plan_preset(
    name: str,
    mesh_shape: Mapping[str, int] | None = None,
    frames: int | None = None,
    size: tuple[int, int] | None = None,
    **kwargs,
) -> MemoryPlan:
    """`plan_memory` for a named preset (`cosjax.configs.PRESETS`): its DiT, all its experts, its VAE
    stride, and its default frame count and (width, height) unless given; kwargs go to `plan_memory`."""
    preset = get_preset(name)
    width, height = size or preset.sampling.size
    return plan_memory(
        preset.dit,
        len(preset.experts),
        frames or preset.sampling.frame_num,
        height,
        width,
        mesh_shape,
        vae_stride=preset.vae_stride,
        **kwargs,
    )


def communication_bytes(plan: MemoryPlan) -> int:
    """Bytes one device sends per DiT forward under the plan's mesh: the ranking `choose_mesh` uses
    (a volume model, not a timing; ring collectives send (k - 1) / k of what they gather):

      fsdp    every block's weights all-gathered once per forward:  N_layers * layer * (f - 1) / f
      context Ulysses: 4 all-to-alls per block (q, k, v, attention out): 4 N_layers c b l D/t (k-1)/k
      tensor  3 all-reduces per block (self-attention, cross-attention, FFN outputs):
              3 N_layers * 2 c b l D (t - 1) / t
      data    nothing per forward (the CFG pair or the seeds are independent until the guidance combine)

    with layer the block's weight bytes without the fsdp split (`parameter_bytes`), b, l, D, c as in
    the module docstring.
    """
    config, mesh = plan.config, plan.mesh_shape
    fsdp, context, tensor = mesh["fsdp"], mesh["context"], mesh["tensor"]
    _, layer = parameter_bytes(config, plan.param_dtype, mesh)
    c = plan.compute_dtype.itemsize
    stream = c * plan.batch_per_device * plan.tokens_per_device * config.dim  # one [b, l, D] activation
    weights = config.num_layers * layer * (fsdp - 1) / fsdp
    ulysses = 4 * config.num_layers * stream / tensor * (context - 1) / context
    reduce = 3 * config.num_layers * 2 * stream * (tensor - 1) / tensor
    return int(weights + ulysses + reduce)


def mesh_candidates(device_count: int, num_heads: int, max_data: int) -> list[dict[str, int]]:
    """Every (data, fsdp, context, tensor) with product `device_count` that the DiT can run: data at
    most the DiT batch (more only pads), tensor dividing the heads, context x tensor dividing the
    heads when context > 1 (Ulysses)."""
    divisors = [d for d in range(1, device_count + 1) if device_count % d == 0]
    out = []
    for data in (d for d in divisors if d <= max_data):
        for tensor in (t for t in divisors if (device_count // data) % t == 0 and num_heads % t == 0):
            for context in (k for k in divisors if (device_count // data // tensor) % k == 0):
                if context > 1 and num_heads % (context * tensor):
                    continue
                fsdp = device_count // (data * tensor * context)
                out.append({"data": data, "fsdp": fsdp, "context": context, "tensor": tensor})
    return out


def choose_mesh(
    config: DiTConfig,
    num_experts: int,
    frames: int,
    height: int,
    width: int,
    device_count: int,
    device_bytes: int | None,
    hosts: int = 1,
    **kwargs,
) -> MemoryPlan:
    """The plan of the mesh over all `device_count` devices that fits `device_bytes` per device with the
    least communication (`communication_bytes`; ties: the smaller total), for sampling one
    `frames` x `height` x `width` video (the largest a run will make). `kwargs` go to `plan_memory`
    (dtypes, cfg, batch, attention, vae_stride, solver, platform).

    `hosts > 1` (a multi-host slice, `device_count / hosts` devices each): a run's replicas must each
    lie within one host (`cosjax.hosts`), and `data` rows on different hosts split the case list
    rather than the batch, so the mesh is chosen for one host's devices and the plan returned is that
    host's (its per-device figures hold on every host); the run's mesh is `global_mesh_shape(plan,
    hosts)`, i.e. that plan's `data` times `hosts`.

    `device_bytes=None` (CPU devices report no limit): every runnable mesh fits; communication decides.
    Raises a ValueError when no mesh fits, with the closest plan's breakdown and the changes that
    would make it fit (`check_fits`: more devices, flash attention, bfloat16, a smaller video, ...).
    """
    if hosts > 1:
        if device_count % hosts:
            raise ValueError(f"{device_count} devices do not split evenly over {hosts} hosts")
        per_host = device_count // hosts
        return choose_mesh(config, num_experts, frames, height, width, per_host, device_bytes, **kwargs)
    cfg_on = kwargs.get("cfg", True)
    max_data = kwargs.get("batch", 1) * (2 if cfg_on else 1)
    plans = []
    for mesh in mesh_candidates(device_count, config.num_heads, max_data):
        plans.append(plan_memory(config, num_experts, frames, height, width, mesh, **kwargs))
    if not plans:
        raise ValueError(f"no mesh of {device_count} devices can run a DiT with {config.num_heads} heads")
    fitting = [p for p in plans if device_bytes is None or p.total <= device_bytes]
    if not fitting:
        closest = min(plans, key=lambda p: p.total)
        more = next(
            (
                n
                for n in (device_count * 2**i for i in range(1, 8))
                if any(
                    plan_memory(config, num_experts, frames, height, width, m, **kwargs).total <= device_bytes
                    for m in mesh_candidates(n, config.num_heads, max_data)
                )
            ),
            None,
        )
        devices = f"use {more} devices of this size (then --mesh auto fits), or " if more else ""
        try:
            check_fits(closest, device_bytes)
        except ValueError as e:
            raise ValueError(
                f"--mesh auto: no mesh of the {device_count} devices fits {device_bytes / GiB:.1f} GiB per "
                f"device; the closest, {_mesh_text(closest)}, needs {closest.total / GiB:.1f} GiB. Fix: "
                f"{devices}make the video smaller (see below).\n{e}"
            ) from None
    return min(fitting, key=lambda p: (communication_bytes(p), p.total))


def global_mesh_shape(plan: MemoryPlan, hosts: int = 1) -> dict[str, int]:
    """The run's mesh for a plan `choose_mesh(..., hosts=hosts)` made for one host: `data` x hosts."""
    shape = {a: int(plan.mesh_shape[a]) for a in MESH_AXES}
    shape["data"] *= hosts
    return shape


def _mesh_text(plan: MemoryPlan, hosts: int = 1) -> str:
    shape = global_mesh_shape(plan, hosts)
    return ",".join(f"{a}={shape[a]}" for a in MESH_AXES)


def describe_choice(plan: MemoryPlan, device_bytes: int | None, hosts: int = 1) -> str:
    """What `--mesh auto` prints: the mesh, its communication per forward, and the memory plan."""
    budget = "no device memory limit known" if device_bytes is None else f"{device_bytes / GiB:.1f} GiB"
    per_host = f"; one replica set per host x {hosts} hosts" if hosts > 1 else ""
    return (
        f"--mesh auto: {_mesh_text(plan, hosts)}{per_host} "
        f"({plan.total / GiB:.2f} GiB per device of {budget}; "
        f"{communication_bytes(plan) / GiB:.2f} GiB sent per device per DiT forward)\n{plan.summary()}"
    )
