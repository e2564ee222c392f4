"""Full-size key coverage without weights: the real A14B / 5B / 1.3B key sets on torch's meta device.

The Diffusers model is instantiated with each real config on the `meta` device (no memory), its
state-dict keys and shapes are renamed to the official layout where asked, and the converter's key
check must accept them against our parameter tree's shapes from `jax.eval_shape`.
"""

from __future__ import annotations

import pytest
from helpers.layouts import official_key
from helpers.torch_refs import torch

import cosjax as cj
from cosjax.weights.dit_keys import KEY_SPECS, check_keys, expected_keys, leaf_shapes
from cosjax.weights.sources import config_from_json

REAL = ["wan2.2-i2v-a14b", "wan2.2-t2v-a14b", "wan2.2-ti2v-5b", "wan2.1-t2v-1.3b"]


def _diffusers_config(preset: str) -> dict:
    """The Diffusers `config.json` of each real transformer (hub contents, wan22.md 3.4)."""
    c = cj.get_preset(preset).dit
    return {
        "_class_name": "WanTransformer3DModel",
        "added_kv_proj_dim": None,
        "attention_head_dim": 128,
        "cross_attn_norm": True,
        "eps": 1e-06,
        "ffn_dim": c.ffn_dim,
        "freq_dim": 256,
        "image_dim": None,
        "in_channels": c.in_dim,
        "num_attention_heads": c.num_heads,
        "num_layers": c.num_layers,
        "out_channels": c.out_dim,
        "patch_size": [1, 2, 2],
        "pos_embed_seq_len": None,
        "qk_norm": "rms_norm_across_heads",
        "rope_max_seq_len": 1024,
        "text_dim": 4096,
    }


def _meta_state_shapes(raw_config: dict) -> dict[str, tuple[int, ...]]:
    from diffusers import WanTransformer3DModel

    kwargs = {k: v for k, v in raw_config.items() if not k.startswith("_")}
    with torch.device("meta"):
        model = WanTransformer3DModel(**kwargs)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


@pytest.mark.parametrize("preset", REAL)
@pytest.mark.parametrize("layout", ["diffusers", "official"])
def test_real_checkpoint_keys_are_covered(preset, layout):
    raw = _diffusers_config(preset)
    config = config_from_json(raw, "config.json")
    assert config == cj.get_preset(preset).dit  # the config.json reader gives the preset back
    shapes = _meta_state_shapes(raw)
    if layout == "official":
        shapes = {official_key(k): v for k, v in shapes.items()}
    check_keys(config, layout, shapes)  # raises on any missing / unexpected / mis-shaped key
    assert set(shapes) == set(expected_keys(config, layout))


def test_key_count_and_parameter_total_of_i2v_a14b():
    """Each leaf is fed by exactly num_layers (stacked) or 1 key, and the total is 14.289 B params."""
    config = cj.get_preset("wan2.2-i2v-a14b").dit
    leaves = leaf_shapes(config)
    assert len(leaves) == len(KEY_SPECS)
    total = sum(int(torch.tensor(s).prod()) for s in leaves.values())
    assert abs(total / 1e9 - 14.289) < 0.001, total
    n_keys = len(expected_keys(config, "official"))
    stacked = sum(spec.stacked for spec in KEY_SPECS)
    assert n_keys == stacked * 40 + (len(KEY_SPECS) - stacked)


def test_official_config_json_is_read():
    raw = {
        "_class_name": "WanModel",
        "_diffusers_version": "0.33.0",
        "dim": 5120,
        "eps": 1e-06,
        "ffn_dim": 13824,
        "freq_dim": 256,
        "in_dim": 36,
        "model_type": "i2v",
        "num_heads": 40,
        "num_layers": 40,
        "out_dim": 16,
        "text_len": 512,
    }
    assert config_from_json(raw, "config.json") == cj.get_preset("wan2.2-i2v-a14b").dit
