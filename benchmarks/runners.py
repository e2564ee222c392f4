"""The two things the suite times: our jitted DiT and Diffusers' `WanTransformer3DModel`.

Both run the same `DiTConfig` on the same weights: the Diffusers model is built with random weights,
written with `save_pretrained`, and loaded into JAX with `cosjax.load_dit`. Inputs (numpy):
x float32 [B, C, T, H, W], t float32 [B], context float32 [B, 512, text_dim] (zero-padded text).

What a "step" is (CFG, guidance scale s, one Euler update x + (sigma_next - sigma) v):
  * ours: the text K/V cache is computed once per run (`WanDiT.encode_text`, timed apart); a step is
    one jitted program: the conditional and unconditional halves as one batch of 2B, the guidance
    combine and the update.
  * Diffusers: as `WanPipeline` does it: two forwards (prompt, then negative prompt), the combine and
    the update in PyTorch.
"""

from __future__ import annotations

import gc
import time

import jax
import jax.numpy as jnp
import numpy as np
from measure import jax_memory_analysis, time_calls

import cosjax
from cosjax.configs import DiTConfig

GUIDANCE, SIGMA, SIGMA_NEXT = 5.0, 0.75, 0.7


def diffusers_kwargs(config: DiTConfig) -> dict:
    """`WanTransformer3DModel` constructor arguments of a cosjax config."""
    return dict(
        patch_size=config.patch_size,
        num_attention_heads=config.num_heads,
        attention_head_dim=config.head_dim,
        in_channels=config.in_dim,
        out_channels=config.out_dim,
        text_dim=config.text_dim,
        freq_dim=config.freq_dim,
        ffn_dim=config.ffn_dim,
        num_layers=config.num_layers,
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
        eps=config.eps,
        rope_max_seq_len=1024,
    )


class Diffusers:
    """Diffusers' Wan transformer on `device` in `dtype`, random weights, saved to `folder`.

    bfloat16 follows `from_pretrained(torch_dtype=bfloat16)`: the modules in the class's
    `_keep_in_fp32_modules` (time embedder, modulation tables, norms) stay float32. Their values are
    rounded to bfloat16 first, so that our all-bfloat16 copy and our float32 copy hold exactly the
    same numbers and the bf16-vs-f32 error measures compute precision only.
    """

    def __init__(self, config: DiTConfig, dtype: str, device: str, folder: str, seed: int = 0):
        import torch
        from diffusers import WanTransformer3DModel

        self.torch, self.device = torch, device
        self.tdtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype]
        torch.manual_seed(seed)
        with torch.device(device):
            model = WanTransformer3DModel(**diffusers_kwargs(config))
        if self.tdtype != torch.float32:
            keep = set(WanTransformer3DModel._keep_in_fp32_modules or ())
            with torch.no_grad():
                for name, p in model.named_parameters():
                    low = p.data.to(self.tdtype)
                    p.data = low.float() if keep & set(name.split(".")) else low
        t0 = time.perf_counter()
        model.save_pretrained(folder)
        self.save_s = time.perf_counter() - t0
        self.model = model.eval()
        self.params = sum(p.numel() for p in model.parameters())

    def _sync(self):
        if self.device.startswith("cuda"):
            self.torch.cuda.synchronize()

    def _empty_cache(self):
        gc.collect()
        if self.device.startswith("cuda"):
            self.torch.cuda.empty_cache()

    def set_inputs(self, x: np.ndarray, t: np.ndarray, context: np.ndarray, negative: np.ndarray):
        to = lambda a: self.torch.from_numpy(a).to(self.device)  # noqa: E731
        self.x, self.t = to(x).to(self.tdtype), to(t)
        self.context, self.negative = to(context).to(self.tdtype), to(negative).to(self.tdtype)

    def forward(self):
        """One forward on the prompt; returns the output tensor after a device sync."""
        with self.torch.no_grad():
            out = self.model(self.x, self.t, self.context, return_dict=False)[0]
        self._sync()
        return out

    def step(self):
        """One CFG sampling step as WanPipeline runs it (two forwards, combine, Euler update)."""
        with self.torch.no_grad():
            cond = self.model(self.x, self.t, self.context, return_dict=False)[0]
            uncond = self.model(self.x, self.t, self.negative, return_dict=False)[0]
            v = uncond + GUIDANCE * (cond - uncond)
            out = self.x.float() + (SIGMA_NEXT - SIGMA) * v.float()
        self._sync()
        return out

    def tune_threads(self, candidates: list[int], calls: int = 2) -> dict[int, float]:
        """CPU: sets torch's intra-op thread count to the fastest of `candidates` (best of `calls`
        forwards each). On a loaded machine OpenMP's spinning threads can make all-cores torch many
        times slower than one thread, so the comparison gives Diffusers its best setting."""
        best = {}
        for n in candidates:
            self.torch.set_num_threads(n)
            self.forward()
            best[n] = min(time_calls(self.forward, calls))
        self.torch.set_num_threads(min(best, key=best.get))
        return best

    def reset_peak(self):
        if self.device.startswith("cuda"):
            self.torch.cuda.reset_peak_memory_stats()

    def peak_bytes(self) -> int | None:
        return int(self.torch.cuda.max_memory_allocated()) if self.device.startswith("cuda") else None

    def close(self):
        del self.model
        self._empty_cache()


class Ours:
    """Our DiT loaded from `folder` with `cosjax.load_dit`, jitted forward and CFG step.

    Attributes after `compile`: timings (lower/compile seconds), memory (XLA memory analysis) and the
    compiled executables `forward_exe`, `step_exe`, `encode_exe`.
    """

    def __init__(self, folder: str, dtype: str, attention_backend: str | None = None, fuse_qkv: bool = False):
        t0 = time.perf_counter()
        loaded = cosjax.load_dit(folder, dtype=dtype)
        self.params = jax.block_until_ready(loaded.params)
        self.load_s = time.perf_counter() - t0
        self.config = loaded.config
        self.module = cosjax.WanDiT(
            loaded.config,
            dtype=loaded.dtype,
            param_dtype=loaded.dtype,
            attention_backend=attention_backend,
            fuse_qkv=fuse_qkv,
        )
        self.timings: dict[str, float] = {}
        self.memory: dict[str, dict] = {}

    def set_inputs(self, x: np.ndarray, t: np.ndarray, context: np.ndarray, negative: np.ndarray):
        self.x, self.t = jnp.asarray(x), jnp.asarray(t)
        self.context = jnp.asarray(context)
        self.cfg_context = jnp.concatenate([jnp.asarray(context), jnp.asarray(negative)])

    def _compile(self, name: str, fn, *args):
        t0 = time.perf_counter()
        lowered = jax.jit(fn).lower(*args)
        t1 = time.perf_counter()
        exe = lowered.compile()
        self.timings[f"{name}_lower_s"] = t1 - t0
        self.timings[f"{name}_compile_s"] = time.perf_counter() - t1
        self.memory[name] = jax_memory_analysis(exe)
        return exe

    def compile(self, step: bool = True):
        """Lowers and compiles the forward (and the text cache + CFG step); records the times."""
        module = self.module

        def forward(p, x, t, c):
            return module.apply({"params": p}, x, t, c)

        def cfg_step(p, kv, x, t):
            b = x.shape[0]
            v = module.apply(
                {"params": p}, jnp.concatenate([x, x]), jnp.concatenate([t, t]), None, text_kv=kv
            )
            v = v[b:] + GUIDANCE * (v[:b] - v[b:])
            return x + (SIGMA_NEXT - SIGMA) * v

        self.forward_exe = self._compile("forward", forward, self.params, self.x, self.t, self.context)
        if step:
            self.encode_exe = self._compile("encode_text", module.encode_text, self.params, self.cfg_context)
            t0 = time.perf_counter()
            self.kv = jax.block_until_ready(self.encode_exe(self.params, self.cfg_context))
            self.timings["encode_text_first_run_s"] = time.perf_counter() - t0
            self.step_exe = self._compile("step", cfg_step, self.params, self.kv, self.x, self.t)

    def forward(self):
        return jax.block_until_ready(self.forward_exe(self.params, self.x, self.t, self.context))

    def step(self):
        return jax.block_until_ready(self.step_exe(self.params, self.kv, self.x, self.t))

    def encode_text(self):
        return jax.block_until_ready(self.encode_exe(self.params, self.cfg_context))

    def to_float32(self):
        """Casts the parameters to float32 leaf by leaf (freeing each bf16 leaf as it goes, so the peak
        is the float32 tree plus one leaf) and computes in float32 from now on. The suite's weights
        are bf16-representable, so this equals loading them in float32."""
        leaves, tree = jax.tree.flatten(self.params)
        self.params = None
        for i, leaf in enumerate(leaves):
            leaves[i] = leaf.astype(jnp.float32)
            leaf.delete()
        self.params = jax.tree.unflatten(tree, leaves)
        m = self.module
        self.module = cosjax.WanDiT(m.config, jnp.float32, jnp.float32, m.attention_backend, m.fuse_qkv)
        return self

    def close(self):
        for name in ("params", "kv", "forward_exe", "step_exe", "encode_exe"):
            if hasattr(self, name):
                delattr(self, name)
        gc.collect()
