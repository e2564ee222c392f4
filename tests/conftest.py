"""Shared fixtures: tiny random PyTorch reference DiTs written in the real on-disk layouts."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

torch = pytest.importorskip("torch")
torch.set_num_threads(1)

# The rename from Diffusers to official key names, written from the published mapping
# (wan22.md section 3.2) as ordered substring replacements, independently of cosjax's own key map so
# that a mistake in one is caught by the other.
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
    if re.fullmatch(r"blocks\.\d+\.scale_shift_table", key):
        return key.replace("scale_shift_table", "modulation")
    if key == "scale_shift_table":
        return "head.modulation"
    for old, new in DIFFUSERS_TO_OFFICIAL:
        key = key.replace(old, new)
    return key


TINY = dict(num_attention_heads=2, attention_head_dim=24, text_dim=32, freq_dim=32, ffn_dim=96)


def make_reference(in_channels=16, out_channels=16, num_layers=2, seed=0, **overrides):
    """A tiny Diffusers WanTransformer3DModel with non-zero random weights everywhere (float32)."""
    from diffusers import WanTransformer3DModel

    kwargs = dict(
        TINY,
        patch_size=(1, 2, 2),
        in_channels=in_channels,
        out_channels=out_channels,
        num_layers=num_layers,
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
        rope_max_seq_len=1024,
    )
    kwargs.update(overrides)
    model = WanTransformer3DModel(**kwargs).eval()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            # norms around 1 so that they do something but keep activations O(1)
            p.copy_(1.0 + 0.2 * noise if "norm" in name else 0.2 * noise)
    return model


def save_official(model, folder: Path, num_shards: int = 3, prefix: str = "", config: bool = True):
    """Writes `model` in the official Wan layout: official key names, sharded safetensors + index."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    state = {prefix + official_key(k): v.contiguous() for k, v in model.state_dict().items()}
    keys = list(state)
    shards = [keys[i::num_shards] for i in range(num_shards)]
    weight_map = {}
    for i, shard_keys in enumerate(shards):
        name = f"diffusion_pytorch_model-{i + 1:05d}-of-{num_shards:05d}.safetensors"
        save_file({k: state[k] for k in shard_keys}, str(folder / name))
        weight_map.update({k: name for k in shard_keys})
    index = {"metadata": {"total_size": 0}, "weight_map": weight_map}
    (folder / "diffusion_pytorch_model.safetensors.index.json").write_text(json.dumps(index))
    if config:
        c = model.config
        in_dim, out_dim = c.in_channels, c.out_channels
        model_type = "i2v" if in_dim == out_dim + 20 else ("ti2v" if in_dim == 48 else "t2v")
        official = {
            "_class_name": "WanModel",
            "_diffusers_version": "0.33.0",
            "dim": c.num_attention_heads * c.attention_head_dim,
            "eps": c.eps,
            "ffn_dim": c.ffn_dim,
            "freq_dim": c.freq_dim,
            "in_dim": in_dim,
            "model_type": model_type,
            "num_heads": c.num_attention_heads,
            "num_layers": c.num_layers,
            "out_dim": out_dim,
            "text_len": 512,
            "text_dim": c.text_dim,
        }
        (folder / "config.json").write_text(json.dumps(official))
    return folder


def relative_error(ours, ref) -> float:
    ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
    return float(np.linalg.norm(ours - ref) / np.linalg.norm(ref))


@pytest.fixture
def reference():
    return make_reference
