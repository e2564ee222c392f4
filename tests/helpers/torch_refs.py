"""Tiny random PyTorch reference models (Diffusers DiT and VAE, transformers umT5) and writers of
the real on-disk layouts they come in.

Importing this module skips the importing test, fixture or module when torch is not installed:
import it at module level only in parity modules, where every test needs torch.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from .layouts import official_key, official_vae_key
from .tokenizer import vocab_size, write_tokenizer

torch = pytest.importorskip("torch")
torch.set_num_threads(1)

TINY = dict(num_attention_heads=2, attention_head_dim=24, text_dim=32, freq_dim=32, ffn_dim=96)
VAE_Z = 16  # the tiny Wan2.1-style VAE's latent channels, as the I2V DiT expects (36 = 16 + 4 + 16)


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


def make_encoder(vocab_size: int, seed: int):
    """Tiny float32 UMT5EncoderModel with non-zero random weights (RMSNorm weights around 1)."""
    from transformers import UMT5Config, UMT5EncoderModel

    config = UMT5Config(
        vocab_size=vocab_size,
        d_model=32,
        d_kv=8,
        num_heads=4,
        d_ff=48,
        num_layers=2,
        feed_forward_proj="gated-gelu",
        relative_attention_num_buckets=32,
        relative_attention_max_distance=128,
        layer_norm_epsilon=1e-6,
    )
    return randomize_umt5(UMT5EncoderModel(config).eval(), seed)


def randomize_umt5(model, seed: int):
    """Fills a transformers umT5 encoder with non-zero random weights in place and returns it:
    RMSNorm weights 1 + 0.2 N(0, 1), the token embedding N(0, 1), every other weight 0.3 N(0, 1)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            p.copy_(
                1.0 + 0.2 * noise if "norm" in name else noise if name == "shared.weight" else 0.3 * noise
            )
    return model


def make_vae(seed: int = 0):
    """A tiny Wan2.1-style `AutoencoderKLWan` (z_dim 16, stride 4x8x8) with random weights (float32)."""
    from diffusers import AutoencoderKLWan

    gen = torch.Generator().manual_seed(seed)
    model = AutoencoderKLWan(
        base_dim=8,
        z_dim=VAE_Z,
        dim_mult=[1, 2, 2, 2],
        num_res_blocks=1,
        temperal_downsample=[False, True, True],
        latents_mean=(0.5 * torch.randn(VAE_Z, generator=gen)).tolist(),
        latents_std=(0.5 + torch.rand(VAE_Z, generator=gen)).tolist(),
    ).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            p.copy_(1.0 + 0.2 * noise if "gamma" in name else 0.2 * noise)
    return model


def save_official_vae(model, path, legacy: bool = False):
    """Writes `model`'s state dict under official key names with `torch.save` (a plain state dict)."""
    config = model.config
    state = {
        official_vae_key(k, config.num_res_blocks, config.is_residual): v
        for k, v in model.state_dict().items()
    }
    assert len(state) == len(model.state_dict())
    torch.save(state, path, _use_new_zipfile_serialization=not legacy)
    return path


def write_text_encoder(tokenizer: Path, encoder: Path, seed: int = 0):
    """A tiny tokenizer in `tokenizer/` and a `make_encoder(seed)` sized to it saved in `encoder/`
    (`save_pretrained`); returns the encoder model."""
    write_tokenizer(tokenizer)
    model = make_encoder(vocab_size(tokenizer), seed=seed)
    model.save_pretrained(encoder)
    return model


def write_diffusers_repo(root: Path) -> Path:
    """A tiny Diffusers-layout Wan2.2 I2V A14B repo with every component in `root`."""
    make_reference(in_channels=36, out_channels=16, seed=1).save_pretrained(root / "transformer")
    make_reference(in_channels=36, out_channels=16, seed=2).save_pretrained(root / "transformer_2")
    make_vae().save_pretrained(root / "vae")
    write_text_encoder(root / "tokenizer", root / "text_encoder", seed=0)
    (root / "model_index.json").write_text(
        json.dumps({"_class_name": "WanImageToVideoPipeline", "boundary_ratio": 0.9})
    )
    return root
