"""Initial latents as a reference pipeline draws them for a seed.

DiffSynth (VBVR's pipeline) draws its initial latents on the CPU with torch's generator, whatever
device the model runs on (`BasePipeline.generate_noise`, called by `WanVideoUnit_NoiseInitializer`):

    torch.randn((1, z_dim, (F - 1) // 4 + 1, H // s, W // s),
                generator=torch.Generator("cpu").manual_seed(seed), device="cpu", dtype=torch.float32)

then casts them to the pipeline dtype (the sampler does that rounding under
`rounding="diffsynth"`). `jax.random` cannot produce the same numbers, so this needs torch (the
`convert` or `test` extra). The official Wan2.2 scripts draw on the GPU's generator
(`torch.Generator(device=cuda)`), which no CPU run reproduces; there is no rule for them here.
"""

from __future__ import annotations

import numpy as np

NOISE_SOURCES = ("jax", "reference")


def reference_noise(shape: tuple[int, ...], seed: int) -> np.ndarray:
    """DiffSynth's initial latents for `seed`: float32 [B, C, T, H, W], torch's CPU generator."""
    try:
        import torch
    except ImportError as err:
        raise ImportError(
            "noise='reference' draws DiffSynth's initial latents with torch's CPU generator, and torch "
            "is not installed: install it (pip install torch==2.13.0 --index-url "
            "https://download.pytorch.org/whl/cpu, or the cosjax[convert] extra), or use noise='jax'"
        ) from err
    generator = torch.Generator("cpu").manual_seed(int(seed))
    return torch.randn(tuple(shape), generator=generator, device="cpu", dtype=torch.float32).numpy()
