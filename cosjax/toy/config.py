"""The toy DiT config: a tiny Wan I2V DiT over 3-channel latents with Wan's 4 + 3 conditioning channels."""

from __future__ import annotations

from cosjax.configs import DiTConfig

MASK_CHANNELS = 4
IMAGE_CHANNELS = 3


def toy_dit_config(
    dim: int = 96,
    num_layers: int = 4,
    num_heads: int = 2,
    ffn_dim: int | None = None,
    patch_size: tuple[int, int, int] = (1, 4, 4),
    text_dim: int = 32,
    text_len: int = 4,
) -> DiTConfig:
    """The pixel-space I2V DiT: in_dim 10 (3 noisy + 4 mask + 3 first frame), out_dim 3.

    head_dim = dim / num_heads must be even (RoPE); the default 96 / 2 = 48 splits 16/16/16 over
    frame, row and column.
    """
    return DiTConfig(
        dim=dim,
        ffn_dim=ffn_dim or 4 * dim,
        num_heads=num_heads,
        num_layers=num_layers,
        in_dim=IMAGE_CHANNELS + MASK_CHANNELS + IMAGE_CHANNELS,
        out_dim=IMAGE_CHANNELS,
        model_type="i2v",
        patch_size=patch_size,
        text_len=text_len,
        text_dim=text_dim,
        freq_dim=64,
    )


def check_toy_dit(model: DiTConfig) -> None:
    """Raises ValueError unless `model` has the toy's layout: "i2v", in_dim 10, out_dim 3."""
    if (
        model.model_type != "i2v"
        or model.out_dim != IMAGE_CHANNELS
        or model.in_dim != 2 * IMAGE_CHANNELS + MASK_CHANNELS
    ):
        raise ValueError(
            f"the pixel toy needs an i2v DiT with in_dim 10 and out_dim 3, got {model.model_type} "
            f"in_dim {model.in_dim} out_dim {model.out_dim}"
        )
