"""The VAE key map: our parameter tree <-> Diffusers / official Wan VAE keys, and the VAE presets.

Diffusers layout (`AutoencoderKLWan`, safetensors). Our tree mirrors the Diffusers module names, with
list indices folded into the name (`encoder.down_blocks.3.resample.1.weight` <->
('encoder', 'down_blocks_3', 'resample_1', 'kernel')), so the map is a rule rather than a table:
  - conv `weight` [O, I, *k] <-> `kernel` [*k, I, O];
  - RMSNorm `gamma` [C, 1, 1, 1] (attention: [C, 1, 1]) <-> `scale` [C];
  - `bias` unchanged.

Official layout (`Wan2.1_VAE.pth`, `Wan2.2_VAE.pth`: a plain torch state dict of the `WanVAE_` modules
in `wan/modules/vae2_1.py` / `vae2_2.py`). Same tensors and leaf rule, other module names
(`official_key`):
  - top level: `quant_conv` <-> `conv1`, `post_quant_conv` <-> `conv2`;
  - encoder / decoder ends: `conv_in` <-> `conv1`, `norm_out` <-> `head.0`, `conv_out` <-> `head.2`;
  - middle: `mid_block.resnets.0` / `attentions.0` / `resnets.1` <-> `middle.0` / `middle.1` / `middle.2`;
  - residual block: `norm1`, `conv1`, `norm2`, `conv2`, `conv_shortcut` <-> `residual.0`,
    `residual.2`, `residual.3`, `residual.6`, `shortcut`;
  - Wan2.1 (flat Sequentials): `encoder.down_blocks.n` <-> `encoder.downsamples.n` (same n);
    decoder level i with R = num_res_blocks: `up_blocks.i.resnets.j` <-> `upsamples.{i(R+2)+j}`,
    `up_blocks.i.upsamplers.0` <-> `upsamples.{i(R+2)+R+1}`;
  - Wan2.2 (one block per level): `down_blocks.i.resnets.j` <-> `downsamples.i.downsamples.j`,
    `down_blocks.i.downsampler` <-> `downsamples.i.downsamples.R`, `up_blocks.i.resnets.j` <->
    `upsamples.i.upsamples.j`, `up_blocks.i.upsampler` <-> `upsamples.i.upsamples.{R+1}`.

The official files carry no config: their architecture is one of the VAE presets of `cosjax.configs`
(`configs.VAE_PRESETS`), told by the latent width (`official_config`). In both layouts the rows come
from the model itself (`abstract_params`), so a checkpoint that does not fit the config is rejected
before any tensor data is used.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from cosjax.configs import VAE_PRESETS, VAEConfig
from cosjax.models.vae import abstract_params
from cosjax.weights import keymap
from cosjax.weights.keymap import KeySpec, Layout
from cosjax.weights.tensors import CheckpointError, Entry

Path_ = tuple[str, ...]
WAN21_VAE, WAN22_VAE = VAE_PRESETS["wan2.1"], VAE_PRESETS["wan2.2"]
# The official files carry no config: the VAE preset of the file's latent width is its architecture.
OFFICIAL_CONFIGS: dict[int, VAEConfig] = {c.z_dim: c for c in VAE_PRESETS.values()}
_LEAF_NAMES = {"kernel": "weight", "scale": "gamma", "bias": "bias"}
_RESNET_PARTS = {
    "norm1": "residual.0",
    "conv1": "residual.2",
    "norm2": "residual.3",
    "conv2": "residual.6",
    "conv_shortcut": "shortcut",
}
_END_PARTS = {"conv_in": "conv1", "norm_out": "head.0", "conv_out": "head.2"}
_MID_PARTS = {"resnets_0": "middle.0", "attentions_0": "middle.1", "resnets_1": "middle.2"}
_TOP_PARTS = {"quant_conv": "conv1", "post_quant_conv": "conv2"}


def diffusers_key(path: Path_) -> str:
    """Our leaf path -> its Diffusers key.

    ('decoder', 'up_blocks_0', 'upsamplers_0', 'time_conv', 'kernel')
    -> 'decoder.up_blocks.0.upsamplers.0.time_conv.weight'.
    """
    *modules, leaf = path
    return ".".join([re.sub(r"_(\d+)$", r".\1", m) for m in modules] + [_LEAF_NAMES[leaf]])


def _index(name: str) -> int:
    return int(name.rsplit("_", 1)[1])


def official_key(path: Path_, config: VAEConfig) -> str:
    """Our leaf path -> its key in the official `Wan2.x_VAE.pth` state dict (rules in the module doc).

    Wan2.1 (num_res_blocks 2): ('decoder', 'up_blocks_1', 'upsamplers_0', 'time_conv', 'kernel')
    -> 'decoder.upsamples.7.time_conv.weight'; Wan2.2: ('encoder', 'down_blocks_1', 'downsampler',
    'resample_1', 'bias') -> 'encoder.downsamples.1.downsamples.2.resample.1.bias'.
    """
    *modules, leaf = path
    r = config.num_res_blocks
    if len(modules) == 1:
        return f"{_TOP_PARTS[modules[0]]}.{_LEAF_NAMES[leaf]}"
    side, block, *rest = modules
    if block in _END_PARTS:
        out = [side, _END_PARTS[block]]
    elif block == "mid_block":
        out = [side, _MID_PARTS[rest.pop(0)]]
    elif block.startswith("down_blocks_") and not config.is_residual:
        out = [side, f"downsamples.{_index(block)}"]
    elif block.startswith("down_blocks_"):
        sub = rest.pop(0)
        j = r if sub == "downsampler" else _index(sub)
        out = [side, f"downsamples.{_index(block)}.downsamples.{j}"]
    elif block.startswith("up_blocks_"):
        i, sub = _index(block), rest.pop(0)
        j = r + 1 if sub in ("upsampler", "upsamplers_0") else _index(sub)
        out = [side, f"upsamples.{i}.upsamples.{j}" if config.is_residual else f"upsamples.{i * (r + 2) + j}"]
    else:
        raise KeyError(f"no official name for {path}")
    out += [_RESNET_PARTS.get(m, re.sub(r"_(\d+)$", r".\1", m)) for m in rest]
    return ".".join(out + [_LEAF_NAMES[leaf]])


def _transform(path: Path_) -> str:
    if path[-1] == "kernel":
        return "conv"
    if path[-1] == "scale":
        return "image_norm" if any(m.startswith("attentions_") for m in path) else "norm"
    return "same"


def key_map(config: VAEConfig) -> keymap.KeyMap:
    """The rows for `config`, one per leaf of its tree, both layouts named by the rules above."""
    leaves = keymap.leaf_shapes(abstract_params(config))
    specs = tuple(
        keymap.spec(path, official_key(path, config), diffusers_key(path), _transform(path))
        for path in leaves
    )
    return keymap.KeyMap("VAE", specs, leaves)


def torch_shape(path: Path_, shape: tuple[int, ...]) -> tuple[int, ...]:
    """The PyTorch shape of the tensor that becomes our leaf of `shape`."""
    return keymap.torch_shape(KeySpec(path, {}, _transform(path)), shape)


def expected_keys(
    config: VAEConfig, layout: Layout = "diffusers"
) -> dict[str, tuple[Path_, tuple[int, ...]]]:
    """{checkpoint key in `layout`: (our leaf path, our leaf shape)} for every parameter `config` needs."""
    km = key_map(config)
    return {key: (s.path, km.leaves[s.path]) for key, (s, _) in km.expected(layout).items()}


def check_keys(
    config: VAEConfig, entries: Mapping[str, Entry], where: object, layout: Layout = "diffusers"
) -> None:
    """Checks names, shapes and dtypes of a checkpoint's tensors against `config` (`KeyMap.check`)."""
    key_map(config).check_entries(layout, entries, where)


def official_config(entries: Mapping[str, Entry], where: object) -> VAEConfig:
    """The VAE preset of an official Wan VAE checkpoint, told by its latent width.

    The width is read from `conv2.weight` (the post-quant conv, [z, z, 1, 1, 1]).

    Raises:
      CheckpointError when `conv2.weight` is absent or its z_dim is no VAE preset's.
    """
    entry = entries.get("conv2.weight")
    if entry is None:
        raise CheckpointError(
            f"{where}: no 'conv2.weight' tensor, so not an official Wan VAE state dict "
            "(pass config= to load it anyway)"
        )
    z_dim = entry.shape[0] if entry.shape else None
    if z_dim not in OFFICIAL_CONFIGS:
        names = {c.z_dim: name for name, c in VAE_PRESETS.items()}
        known = " nor ".join(f"{z} ({names.get(z, 'custom')})" for z in OFFICIAL_CONFIGS)
        raise CheckpointError(
            f"{where}: 'conv2.weight' has shape {entry.shape}: z_dim {z_dim} is neither {known}; pass "
            "config= to load it"
        )
    return OFFICIAL_CONFIGS[z_dim]
