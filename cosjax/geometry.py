"""Video geometry: pixel frames and size -> latent grid -> DiT tokens, with the checks that go with it.

A Wan video has F = s_t k + 1 pixel frames (the VAE encodes the first frame alone, then s_t frames
per latent frame; s_t = 4 for both Wan VAEs) and H x W pixels; its latents are
[C, T, h, w] = [z_dim, (F - 1) / s_t + 1, H / s_h, W / s_w]. The DiT cuts the latent grid into
(pt, ph, pw) patches, one token each: L = (T / pt) (h / ph) (w / pw) tokens, padded to a multiple of
the context-parallel axis when the sequence is sharded. Every function here is pure integer
arithmetic; the strides come from the model's preset (`ModelPreset.vae_stride`, `DiTConfig.patch_size`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

Triple = tuple[int, int, int]


def latent_frames(frames: int, temporal_stride: int = 4) -> int:
    """Latent frames T = (F - 1) / s_t + 1 of an F-frame video.

    Raises:
      ValueError unless F = s_t k + 1 with k >= 0 (1, 5, 9, ... for s_t = 4).
    """
    st = temporal_stride
    if frames < 1 or (frames - 1) % st:
        raise ValueError(
            f"frame count {frames} is not of the form {st}k + 1 ({st}k+1: 1, {1 + st}, {1 + 2 * st}, ..., "
            f"e.g. 33, 49, 81): frames must be {st} k + 1 for the VAE's time stride {st}"
        )
    return (frames - 1) // st + 1


def pixel_frames(latent_frames: int, temporal_stride: int = 4) -> int:
    """Pixel frames F = s_t (T - 1) + 1 that decode from T latent frames."""
    return temporal_stride * (latent_frames - 1) + 1


def round_up_frames(frames: int, temporal_stride: int = 4) -> int:
    """The least s_t k + 1 >= `frames` (DiffSynth's rule for a clip of any length)."""
    st = temporal_stride
    return -(-max(frames - 1, 0) // st) * st + 1


def latent_size(
    height: int, width: int, vae_stride: Sequence[int], patch: Sequence[int] = (1, 1)
) -> tuple[int, int]:
    """Latent (h, w) = (H / s_h, W / s_w) of an H x W video.

    Args:
      vae_stride: (s_h, s_w), or (s_t, s_h, s_w) (the temporal stride is ignored).
      patch: (ph, pw), or (pt, ph, pw): the latent sides must also be multiples of the patch.

    Raises:
      ValueError unless H is a positive multiple of s_h ph and W of s_w pw.
    """
    sh, sw = tuple(vae_stride)[-2:]
    ph, pw = tuple(patch)[-2:]
    if height <= 0 or width <= 0 or height % (sh * ph) or width % (sw * pw):
        raise ValueError(
            f"size {height}x{width} cannot be tiled: height must be a multiple of {sh * ph} and width of "
            f"{sw * pw} (VAE stride {sh}x{sw} times patch {ph}x{pw}: height and width must be multiples "
            f"of those)"
        )
    return height // sh, width // sw


def latent_grid(frames: int, height: int, width: int, vae_stride: Sequence[int]) -> Triple:
    """(T, h, w) latent grid of an F x H x W video at VAE stride (s_t, s_h, s_w); raises as
    `latent_frames` and `latent_size` do."""
    st, sh, sw = vae_stride
    return (latent_frames(frames, st), *latent_size(height, width, (sh, sw)))


def latent_shape(
    batch: int, channels: int, frames: int, height: int, width: int, vae_stride: Sequence[int]
) -> tuple[int, int, int, int, int]:
    """[B, C, T, h, w] latents of a batch of F x H x W videos."""
    return (batch, channels, *latent_grid(frames, height, width, vae_stride))


def token_grid(grid: Sequence[int], patch: Sequence[int]) -> Triple:
    """(T / pt, h / ph, w / pw) tokens along each axis of a (T, h, w) latent grid.

    Raises:
      ValueError unless every side divides by its patch.
    """
    t, h, w = grid
    pt, ph, pw = patch
    if t % pt or h % ph or w % pw:
        raise ValueError(f"latent grid {tuple(grid)} is not divisible by the patch size {tuple(patch)}")
    return t // pt, h // ph, w // pw


def num_tokens(grid: Sequence[int], patch: Sequence[int]) -> int:
    """L = (T / pt)(h / ph)(w / pw): the DiT sequence length of a (T, h, w) latent grid (or of the
    trailing three entries of a latent shape [B, C, T, h, w])."""
    return math.prod(token_grid(tuple(grid)[-3:], patch))


def tokens_per_shard(tokens: int, shards: int) -> int:
    """ceil(L / n): the tokens each of `shards` context-parallel devices holds (the sequence is
    zero-padded to n ceil(L / n))."""
    return -(-tokens // shards)


def padded_tokens(tokens: int, shards: int) -> int:
    """n ceil(L / n): the sequence length after padding to a multiple of `shards` devices."""
    return shards * tokens_per_shard(tokens, shards)
