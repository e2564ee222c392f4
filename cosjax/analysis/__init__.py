"""Analyses of the paper "Demystifying Video Reasoning": CKA, activation energy, image grids.

cka:     linear CKA / 1 - CKA between representations ("information flow").
energy:  token / layer / frame L2 energy of hidden states on the latent token grid.
images:  uint8 step x frame grids, viridis heatmaps, tiling (pure numpy).
phenomena, summaries: the issue-14 measures per case and over cases (pure numpy).
plots:   labelled matplotlib figures (import `cosjax.analysis.plots`; not re-exported here, so that
         importing the package does not load matplotlib).
"""

from cosjax.analysis.cka import batched_linear_cka, cka_dissimilarity, cka_matrix, linear_cka
from cosjax.analysis.energy import (
    conditional_half,
    frame_energy,
    frame_mean_energy,
    mean_energy,
    to_grid,
    token_energy,
    token_energy_grid,
    token_grid,
)
from cosjax.analysis.images import (
    VIRIDIS_ANCHORS,
    grid,
    heatmap,
    step_frame_grid,
    upscale,
    video_frames,
    viridis,
)

__all__ = [
    "VIRIDIS_ANCHORS",
    "batched_linear_cka",
    "cka_dissimilarity",
    "cka_matrix",
    "conditional_half",
    "frame_energy",
    "frame_mean_energy",
    "grid",
    "heatmap",
    "linear_cka",
    "mean_energy",
    "step_frame_grid",
    "to_grid",
    "token_energy",
    "token_energy_grid",
    "token_grid",
    "upscale",
    "video_frames",
    "viridis",
]
