"""The test suite's own renames of checkpoint keys into the official Wan layout.

Written from the published mappings (wan22.md sections 3.2, 6.4 and 7) as ordered substring or regex
replacements, independently of cosjax's key maps (`cosjax.weights.*_keys`), so that a mistake in one
is caught by the other. Plain strings: no torch needed.
"""

from __future__ import annotations

import re

# ---- DiT: Diffusers `WanTransformer3DModel` -> official `WanModel` ------------------------------

# wan22.md section 3.2, as ordered substring replacements.
DIFFUSERS_TO_OFFICIAL = [
    ("condition_embedder.time_embedder.linear_1", "time_embedding.0"),
    ("condition_embedder.time_embedder.linear_2", "time_embedding.2"),
    ("condition_embedder.time_proj", "time_projection.1"),
    ("condition_embedder.text_embedder.linear_1", "text_embedding.0"),
    ("condition_embedder.text_embedder.linear_2", "text_embedding.2"),
    ("attn1.to_out.0", "self_attn.o"),
    ("attn1.to_", "self_attn."),
    ("attn1.norm_", "self_attn.norm_"),
    ("attn2.to_out.0", "cross_attn.o"),
    ("attn2.to_", "cross_attn."),
    ("attn2.norm_", "cross_attn.norm_"),
    (".norm2.", ".norm3."),
    ("ffn.net.0.proj", "ffn.0"),
    ("ffn.net.2", "ffn.2"),
    ("proj_out", "head.head"),
]


def official_key(key: str) -> str:
    """A Diffusers DiT key -> its official name (the modulation tables are renamed whole)."""
    if re.fullmatch(r"blocks\.\d+\.scale_shift_table", key):
        return key.replace("scale_shift_table", "modulation")
    if key == "scale_shift_table":
        return "head.modulation"
    for old, new in DIFFUSERS_TO_OFFICIAL:
        key = key.replace(old, new)
    return key


# ---- umT5: transformers `UMT5EncoderModel` -> official `models_t5_umt5-xxl-enc-bf16.pth` ----------

# transformers -> official Wan names (wan22.md section 7), as ordered substring replacements.
HF_TO_OFFICIAL = [
    ("shared.weight", "token_embedding.weight"),
    ("encoder.final_layer_norm.weight", "norm.weight"),
    ("encoder.block.", "blocks."),
    (".layer.0.layer_norm.", ".norm1."),
    (".layer.0.SelfAttention.relative_attention_bias.", ".pos_embedding.embedding."),
    (".layer.0.SelfAttention.", ".attn."),
    (".layer.1.layer_norm.", ".norm2."),
    (".layer.1.DenseReluDense.wi_0.", ".ffn.gate.0."),
    (".layer.1.DenseReluDense.wi_1.", ".ffn.fc1."),
    (".layer.1.DenseReluDense.wo.", ".ffn.fc2."),
]
TIED_ALIAS = "encoder.embed_tokens.weight"


def official_t5_state(state: dict) -> dict:
    """A transformers state dict renamed to the official layout (the tied alias dropped)."""
    out = {}
    for key, value in state.items():
        if key == TIED_ALIAS:
            continue
        for old, new in HF_TO_OFFICIAL:
            key = key.replace(old, new)
        out[key] = value
    return out


# ---- VAE: Diffusers `AutoencoderKLWan` -> official `Wan2.1_VAE.pth` / `Wan2.2_VAE.pth` -----------
#
# The inverse of the published official -> Diffusers VAE rename (wan22.md 6.4, `convert_vae` /
# `convert_vae_22` of Diffusers' conversion script), written here as regex rewrites of Diffusers keys,
# independently of `cosjax.weights.vae_keys.official_key` (which walks our parameter tree).
_OFFICIAL_PARTS = [  # inside residual blocks, then the fixed names
    (r"\.norm1\.", ".residual.0."),
    (r"\.conv1\.", ".residual.2."),
    (r"\.norm2\.", ".residual.3."),
    (r"\.conv2\.", ".residual.6."),
    (r"\.conv_shortcut\.", ".shortcut."),
    (r"^quant_conv\.", "conv1."),
    (r"^post_quant_conv\.", "conv2."),
    (r"^(encoder|decoder)\.conv_in\.", r"\1.conv1."),
    (r"^(encoder|decoder)\.norm_out\.", r"\1.head.0."),
    (r"^(encoder|decoder)\.conv_out\.", r"\1.head.2."),
    (r"\.mid_block\.resnets\.0\.", ".middle.0."),
    (r"\.mid_block\.attentions\.0\.", ".middle.1."),
    (r"\.mid_block\.resnets\.1\.", ".middle.2."),
]


def official_vae_key(key: str, num_res_blocks: int, is_residual: bool) -> str:
    """A Diffusers `AutoencoderKLWan` key -> its name in `Wan2.1_VAE.pth` / `Wan2.2_VAE.pth`."""
    n = num_res_blocks
    for old, new in _OFFICIAL_PARTS:
        key = re.sub(old, new, key)
    if is_residual:  # Wan2.2: one Sequential per level
        key = re.sub(r"^encoder\.down_blocks\.(\d+)\.resnets\.", r"encoder.downsamples.\1.downsamples.", key)
        key = re.sub(
            r"^encoder\.down_blocks\.(\d+)\.downsampler\.", rf"encoder.downsamples.\1.downsamples.{n}.", key
        )
        key = re.sub(r"^decoder\.up_blocks\.(\d+)\.resnets\.", r"decoder.upsamples.\1.upsamples.", key)
        key = re.sub(
            r"^decoder\.up_blocks\.(\d+)\.upsampler\.", rf"decoder.upsamples.\1.upsamples.{n + 1}.", key
        )
    else:  # Wan2.1: flat Sequentials; a decoder level is n + 1 residual blocks and a resampler
        key = re.sub(r"^encoder\.down_blocks\.", "encoder.downsamples.", key)
        key = re.sub(
            r"^decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.",
            lambda m: f"decoder.upsamples.{int(m[1]) * (n + 2) + int(m[2])}.",
            key,
        )
        key = re.sub(
            r"^decoder\.up_blocks\.(\d+)\.upsamplers\.0\.",
            lambda m: f"decoder.upsamples.{int(m[1]) * (n + 2) + n + 1}.",
            key,
        )
    return key
