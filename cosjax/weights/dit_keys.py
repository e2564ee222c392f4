"""The DiT key map: each parameter of our tree, its name in both PyTorch layouts, its transform.

One table serves both layouts: the official `WanModel` names (`wan22.md` 3.1) and the Diffusers
`WanTransformer3DModel` names (3.2). Block rows hold a `{i}` placeholder for the layer index and
land stacked on the leading layer axis of our tree.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import numpy as np

from cosjax.configs import DiTConfig

Layout = Literal["official", "diffusers"]
Transform = Literal["linear", "patch", "table", "same"]


@dataclasses.dataclass(frozen=True)
class KeySpec:
    """One parameter leaf of our tree and where it comes from.

    Attributes:
      path: path of the leaf in our parameter tree.
      official: key in the official layout (`{i}` = layer index for stacked leaves).
      diffusers: key in the Diffusers layout.
      transform: "linear" ([out, in] -> [in, out]), "patch" (Conv3d [D, C, pt, ph, pw] -> Dense
        kernel [C*pt*ph*pw, D]), "table" (modulation [1, k, D] -> [k, D]) or "same".
      stacked: the leaf has a leading layer axis filled from `{i}` = 0..num_layers-1.
    """

    path: tuple[str, ...]
    official: str
    diffusers: str
    transform: Transform
    stacked: bool

    def key(self, layout: Layout, layer: int | None = None) -> str:
        name = self.official if layout == "official" else self.diffusers
        return name.format(i=layer) if self.stacked else name


def _linear(path, official, diffusers, stacked=False):
    """Weight and bias rows of one Linear layer."""
    return [
        KeySpec((*path, "kernel"), f"{official}.weight", f"{diffusers}.weight", "linear", stacked),
        KeySpec((*path, "bias"), f"{official}.bias", f"{diffusers}.bias", "same", stacked),
    ]


def _attention(ours, official, diffusers):
    rows = []
    for proj, d_proj in (("q", "to_q"), ("k", "to_k"), ("v", "to_v"), ("o", "to_out.0")):
        rows += _linear(
            ("blocks", ours, proj),
            f"blocks.{{i}}.{official}.{proj}",
            f"blocks.{{i}}.{diffusers}.{d_proj}",
            stacked=True,
        )
    for norm in ("norm_q", "norm_k"):
        rows.append(
            KeySpec(
                ("blocks", ours, norm, "scale"),
                f"blocks.{{i}}.{official}.{norm}.weight",
                f"blocks.{{i}}.{diffusers}.{norm}.weight",
                "same",
                True,
            )
        )
    return rows


KEY_SPECS: tuple[KeySpec, ...] = tuple(
    [
        KeySpec(
            ("patch_embedding", "kernel"), "patch_embedding.weight", "patch_embedding.weight", "patch", False
        ),
        KeySpec(("patch_embedding", "bias"), "patch_embedding.bias", "patch_embedding.bias", "same", False),
        *_linear(("text_embedding_1",), "text_embedding.0", "condition_embedder.text_embedder.linear_1"),
        *_linear(("text_embedding_2",), "text_embedding.2", "condition_embedder.text_embedder.linear_2"),
        *_linear(("time_embedding_1",), "time_embedding.0", "condition_embedder.time_embedder.linear_1"),
        *_linear(("time_embedding_2",), "time_embedding.2", "condition_embedder.time_embedder.linear_2"),
        *_linear(("time_projection",), "time_projection.1", "condition_embedder.time_proj"),
        KeySpec(
            ("blocks", "modulation"), "blocks.{i}.modulation", "blocks.{i}.scale_shift_table", "table", True
        ),
        *_attention("self_attn", "self_attn", "attn1"),
        *_attention("cross_attn", "cross_attn", "attn2"),
        # The official cross-attention LayerNorm is `norm3`; Diffusers calls the same one `norm2`.
        KeySpec(
            ("blocks", "cross_norm", "scale"),
            "blocks.{i}.norm3.weight",
            "blocks.{i}.norm2.weight",
            "same",
            True,
        ),
        KeySpec(
            ("blocks", "cross_norm", "bias"), "blocks.{i}.norm3.bias", "blocks.{i}.norm2.bias", "same", True
        ),
        *_linear(("blocks", "fc1"), "blocks.{i}.ffn.0", "blocks.{i}.ffn.net.0.proj", stacked=True),
        *_linear(("blocks", "fc2"), "blocks.{i}.ffn.2", "blocks.{i}.ffn.net.2", stacked=True),
        KeySpec(("head_modulation",), "head.modulation", "scale_shift_table", "table", False),
        *_linear(("head",), "head.head", "proj_out"),
    ]
)


def torch_shape(spec: KeySpec, leaf_shape: tuple[int, ...], config: DiTConfig) -> tuple[int, ...]:
    """The PyTorch tensor shape (one layer) that becomes our leaf of shape `leaf_shape`."""
    shape = tuple(leaf_shape[1:] if spec.stacked else leaf_shape)
    if spec.transform == "linear":
        return shape[::-1]
    if spec.transform == "patch":
        return (shape[1], shape[0] // config.patch_volume, *config.patch_size)
    if spec.transform == "table":
        return (1, *shape)
    return shape


def to_leaf(spec: KeySpec, tensor: np.ndarray) -> np.ndarray:
    """Turns one PyTorch tensor (one layer) into our layout (still in its source dtype)."""
    if spec.transform == "linear":
        return tensor.T
    if spec.transform == "patch":
        return tensor.reshape(tensor.shape[0], -1).T
    if spec.transform == "table":
        return tensor[0]
    return tensor


def expected_keys(config: DiTConfig, layout: Layout) -> dict[str, tuple[KeySpec, int | None]]:
    """Every key a checkpoint of `config` must hold in `layout`, with its spec and layer index."""
    keys = {}
    for spec in KEY_SPECS:
        for layer in range(config.num_layers) if spec.stacked else [None]:
            keys[spec.key(layout, layer)] = (spec, layer)
    return keys
