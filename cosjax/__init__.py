"""cosjax: a JAX/Flax port of the Wan video diffusion models for studying how they reason."""

from cosjax.configs import PRESETS, DiTConfig, ModelPreset, get_preset
from cosjax.models.dit import WanDiT, abstract_params, init_params
from cosjax.plan import LayerPlan, Plan

__all__ = [
    "LayerPlan",
    "PRESETS",
    "DiTConfig",
    "ModelPreset",
    "Plan",
    "WanDiT",
    "abstract_params",
    "get_preset",
    "init_params",
]

from cosjax.weights.convert import convert_checkpoint  # noqa: E402
from cosjax.weights.store import LoadedDiT, load_dit  # noqa: E402

__all__ += ["LoadedDiT", "convert_checkpoint", "load_dit"]
