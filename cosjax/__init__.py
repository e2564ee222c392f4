"""cosjax: a JAX/Flax port of the Wan video diffusion models for studying how they reason."""

from cosjax.configs import PRESETS, DiTConfig, GuideScale, ModelPreset, get_preset
from cosjax.models.dit import WanDiT, abstract_params, init_params
from cosjax.plan import LayerPlan, Plan

__all__ = [
    "LayerPlan",
    "PRESETS",
    "DiTConfig",
    "GuideScale",
    "ModelPreset",
    "Plan",
    "WanDiT",
    "abstract_params",
    "get_preset",
    "init_params",
]

from cosjax.weights.convert import convert_checkpoint  # noqa: E402
from cosjax.weights.loading import LoadedDiT, load_dit  # noqa: E402

__all__ += ["LoadedDiT", "convert_checkpoint", "load_dit"]

from cosjax.pipeline import Pipeline  # noqa: E402
from cosjax.sampling.build import build_sampler  # noqa: E402
from cosjax.sampling.sampler import Conditioning, Result, Sampler, SamplerSettings, Trace, make_sampler  # noqa: E402
from cosjax.transforms import (  # noqa: E402
    capture,
    check_indices,
    ensemble,
    noise_at_frame,
    noise_at_step,
    swap_layer,
    trace_x0,
)

__all__ += [
    "Conditioning",
    "Pipeline",
    "Result",
    "Sampler",
    "SamplerSettings",
    "Trace",
    "build_sampler",
    "capture",
    "check_indices",
    "ensemble",
    "make_sampler",
    "noise_at_frame",
    "noise_at_step",
    "swap_layer",
    "trace_x0",
]
