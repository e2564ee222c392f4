"""The umT5 encoder key table: our stacked tree <-> the official `T5Encoder` and transformers names.

Layouts (`docs/` wan22.md section 7): "official" is `models_t5_umt5-xxl-enc-bf16.pth` (a torch state
dict); "diffusers" is a Diffusers repo's `text_encoder/`, transformers' `UMT5EncoderModel` (whose
token embedding is tied: `shared.weight` and/or `encoder.embed_tokens.weight`, the first preferred).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from cosjax.models.t5 import T5Config, abstract_params
from cosjax.weights import keymap
from cosjax.weights.keymap import KeySpec, Layout, spec
from cosjax.weights.tensors import CheckpointError


def _block(ours: str, official: str, diffusers: str, transform: str) -> KeySpec:
    return spec(
        ("blocks", ours),
        f"blocks.{{i}}.{official}.weight",
        f"encoder.block.{{i}}.layer.{diffusers}.weight",
        transform,
        True,
    )


KEY_SPECS: tuple[KeySpec, ...] = (
    spec(("token_embedding",), "token_embedding.weight", ("shared.weight", "encoder.embed_tokens.weight")),
    _block("norm1", "norm1", "0.layer_norm", "same"),
    _block("q", "attn.q", "0.SelfAttention.q", "linear"),
    _block("k", "attn.k", "0.SelfAttention.k", "linear"),
    _block("v", "attn.v", "0.SelfAttention.v", "linear"),
    _block("o", "attn.o", "0.SelfAttention.o", "linear"),
    _block("rel_bias", "pos_embedding.embedding", "0.SelfAttention.relative_attention_bias", "same"),
    _block("norm2", "norm2", "1.layer_norm", "same"),
    _block("gate", "ffn.gate.0", "1.DenseReluDense.wi_0", "linear"),  # the GELU branch
    _block("fc1", "ffn.fc1", "1.DenseReluDense.wi_1", "linear"),  # the linear branch
    _block("fc2", "ffn.fc2", "1.DenseReluDense.wo", "linear"),
    spec(("norm",), "norm.weight", "encoder.final_layer_norm.weight"),
)


def key_map(config: T5Config) -> keymap.KeyMap:
    return keymap.KeyMap(
        "umT5", KEY_SPECS, keymap.leaf_shapes(abstract_params(config)), config.num_layers, str(config)
    )


def check_keys(
    config: T5Config,
    layout: Layout,
    shapes: Mapping[str, tuple[int, ...]],
    files: Mapping[str, object] | None = None,
    where: object = "checkpoint",
) -> list[tuple[KeySpec, list[str]]]:
    """Checks a checkpoint's keys and shapes against `config`; returns the plan (`KeyMap.check`)."""
    return key_map(config).check(layout, shapes, files, where)


def detect_layout(keys: Iterable[str], where: object) -> Layout:
    """The naming most keys follow: "official" or "diffusers"."""
    keys = list(keys)
    official = sum(k.startswith("blocks.") or k in ("token_embedding.weight", "norm.weight") for k in keys)
    diffusers = sum(k.startswith("encoder.") or k == "shared.weight" for k in keys)
    if not official and not diffusers:
        raise CheckpointError(
            f"{where}: not a umT5 encoder checkpoint (no official or transformers key names)"
        )
    return "official" if official > diffusers else "diffusers"
