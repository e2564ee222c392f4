"""The paper's experiments, one module per experiment, each with a `Config` and `run(config, model, out)`.

`cosjax run NAME [--model PATH] [--data SOURCE] [--out DIR] [key=value ...]` dispatches here.
"""

from __future__ import annotations

import importlib
from types import ModuleType

EXPERIMENTS: dict[str, str] = {
    "trajectory": "experiments.trajectory",
    "noise-perturbation": "experiments.noise_perturbation",
    "information-flow": "experiments.information_flow",
    "layer-energy": "experiments.layer_energy",
    "latent-swap": "experiments.latent_swap",
    "ensemble": "experiments.ensemble",
}


def get(name: str) -> ModuleType:
    """The module of experiment `name` (KeyError listing the known names)."""
    if name not in EXPERIMENTS:
        raise KeyError(f"unknown experiment {name!r}; known: {', '.join(EXPERIMENTS)}")
    return importlib.import_module(EXPERIMENTS[name])
