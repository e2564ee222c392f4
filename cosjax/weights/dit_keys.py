"""The DiT key table: each leaf of our tree, its name in the official and the Diffusers layout.

Official `WanModel` names (`docs/` wan22.md 3.1) and Diffusers `WanTransformer3DModel` names (3.2).
Block rows hold `{i}` for the layer index and land stacked on the leading layer axis of our tree.
The engine (`keymap`) does the checking and streaming; this module is the table.
"""

from __future__ import annotations

from collections.abc import Mapping

from cosjax.configs import DiTConfig
from cosjax.models.dit import abstract_params
from cosjax.weights import keymap
from cosjax.weights.keymap import KeySpec, Layout, spec

# One key per layout that only that layout has: how a checkpoint's layout is told.
PROBES: dict[str, str] = {
    "official": "time_projection.1.weight",
    "diffusers": "condition_embedder.time_proj.weight",
}
# Keys whose shapes give the architecture when there is no config.json: (ffn in, text in, time in, head).
SHAPE_KEYS: dict[str, tuple[str, str, str, str]] = {
    "official": ("ffn.0.weight", "text_embedding.0.weight", "time_embedding.0.weight", "head.head.weight"),
    "diffusers": (
        "ffn.net.0.proj.weight",
        "condition_embedder.text_embedder.linear_1.weight",
        "condition_embedder.time_embedder.linear_1.weight",
        "proj_out.weight",
    ),
}


def _linear(path, official, diffusers, stacked=False):
    """Weight and bias rows of one Linear layer."""
    return [
        spec((*path, "kernel"), f"{official}.weight", f"{diffusers}.weight", "linear", stacked),
        spec((*path, "bias"), f"{official}.bias", f"{diffusers}.bias", "same", stacked),
    ]


def _attention(ours, official, diffusers):
    rows = []
    for proj, d_proj in (("q", "to_q"), ("k", "to_k"), ("v", "to_v"), ("o", "to_out.0")):
        rows += _linear(
            ("blocks", ours, proj),
            f"blocks.{{i}}.{official}.{proj}",
            f"blocks.{{i}}.{diffusers}.{d_proj}",
            True,
        )
    for norm in ("norm_q", "norm_k"):
        rows.append(
            spec(
                ("blocks", ours, norm, "scale"),
                f"blocks.{{i}}.{official}.{norm}.weight",
                f"blocks.{{i}}.{diffusers}.{norm}.weight",
                stacked=True,
            )
        )
    return rows


KEY_SPECS: tuple[KeySpec, ...] = (
    spec(("patch_embedding", "kernel"), "patch_embedding.weight", "patch_embedding.weight", "patch"),
    spec(("patch_embedding", "bias"), "patch_embedding.bias", "patch_embedding.bias"),
    *_linear(("text_embedding_1",), "text_embedding.0", "condition_embedder.text_embedder.linear_1"),
    *_linear(("text_embedding_2",), "text_embedding.2", "condition_embedder.text_embedder.linear_2"),
    *_linear(("time_embedding_1",), "time_embedding.0", "condition_embedder.time_embedder.linear_1"),
    *_linear(("time_embedding_2",), "time_embedding.2", "condition_embedder.time_embedder.linear_2"),
    *_linear(("time_projection",), "time_projection.1", "condition_embedder.time_proj"),
    spec(("blocks", "modulation"), "blocks.{i}.modulation", "blocks.{i}.scale_shift_table", "table", True),
    *_attention("self_attn", "self_attn", "attn1"),
    *_attention("cross_attn", "cross_attn", "attn2"),
    # The official cross-attention LayerNorm is `norm3`; Diffusers calls the same one `norm2`.
    spec(
        ("blocks", "cross_norm", "scale"), "blocks.{i}.norm3.weight", "blocks.{i}.norm2.weight", stacked=True
    ),
    spec(("blocks", "cross_norm", "bias"), "blocks.{i}.norm3.bias", "blocks.{i}.norm2.bias", stacked=True),
    *_linear(("blocks", "fc1"), "blocks.{i}.ffn.0", "blocks.{i}.ffn.net.0.proj", stacked=True),
    *_linear(("blocks", "fc2"), "blocks.{i}.ffn.2", "blocks.{i}.ffn.net.2", stacked=True),
    spec(("head_modulation",), "head.modulation", "scale_shift_table", "table"),
    *_linear(("head",), "head.head", "proj_out"),
)


def leaf_shapes(config: DiTConfig) -> dict[tuple[str, ...], tuple[int, ...]]:
    """Our parameter tree's leaves as {path: shape}, from `jax.eval_shape` (nothing allocated)."""
    return keymap.leaf_shapes(abstract_params(config))


def key_map(config: DiTConfig) -> keymap.KeyMap:
    described = (
        f"dim={config.dim}, ffn_dim={config.ffn_dim}, in_dim={config.in_dim}, out_dim={config.out_dim}, "
        f"num_layers={config.num_layers}"
    )
    return keymap.KeyMap(
        "DiT", KEY_SPECS, leaf_shapes(config), config.num_layers, described, config.patch_size
    )


def torch_shape(spec: KeySpec, leaf_shape: tuple[int, ...], config: DiTConfig) -> tuple[int, ...]:
    """The PyTorch tensor shape (one layer) that becomes our leaf of shape `leaf_shape`."""
    return keymap.torch_shape(spec, leaf_shape, config.patch_size)


def expected_keys(config: DiTConfig, layout: Layout) -> dict[str, tuple[KeySpec, int | None]]:
    """Every key a checkpoint of `config` must hold in `layout`, with its row and layer index."""
    return key_map(config).expected(layout)


def check_keys(
    config: DiTConfig,
    layout: Layout,
    shapes: Mapping[str, tuple[int, ...]],
    files: Mapping[str, object] | None = None,
    where: object = "checkpoint",
) -> None:
    """Checks a checkpoint's keys and shapes against what `config` needs (`KeyMap.check`)."""
    key_map(config).check(layout, shapes, files, where)
