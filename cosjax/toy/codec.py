"""The toy's latent codec: videos <-> latents, the I2V conditioning y and the prompt embeddings.

A fixed linear stand-in for the Wan VAE; what training (`cosjax.toy.train`) and sampling
(`cosjax.subjects.ToySubject`) both see.

Latent layout (what the DiT and the sampler see; `encode_videos` / `decode_latents`):
  * videos are uint8 [N, F, H, W, 3] (F = 9, H = W = 32 for the toy tasks); x = video / 127.5 - 1
    in [-1, 1], channels-first [B, 3, F, H, W].
  * space "pixel": x itself; space "delta" (default): (x - x[:, :, :1]) / 2, the change from the
    first frame, exactly 0 wherever nothing moves.
  * pool k / stride t / scale c: the latents are average-pooled k x k, only the keyframes
    0, t, 2t, ... are kept (t = 4 is Wan's VAE geometry: 9 frames -> 3 latent frames) and the result
    is multiplied by c (the counterpart of the Wan VAE's latent normalisation); a fixed linear "VAE",
    decoded by nearest upsampling and linear interpolation between keyframes. The shipped recipe
    (experiments/train_toy.py) uses k = 2, t = 4, c = 4 with (1, 4, 4) patches: 3 x 4 x 4 = 48 tokens,
    one per 8 x 8-pixel cell, 48 noise values each.
  * I2V conditioning `y` [B, 7, F', H', W'] (same structure as Wan's 4 mask + image-latent channels):
    channels 0-3 the mask, ones on frame 0 and zeros elsewhere (Wan's 4 mask channels stand for the
    4 video frames packed in one latent frame; here all 4 are the same frame-0 mask, kept so the
    channel structure matches the real I2V models); channels 4-6 the (pooled) first frame in [-1, 1]
    on frame 0, zeros on the other frames.
  * so in_dim = 3 (noisy latent) + 4 + 3 = 10, out_dim = 3, model_type "i2v".

Text: a fixed random embedding per prompt id, float32 [num_prompts, text_len=4, text_dim], drawn
once from the seed and stored in the workdir and the export. The DiT's own learned text MLP
(`text_embedding_1/2`) maps them wherever it needs, so a jointly learned table adds nothing for a
closed set of ids; fixed vectors keep the export simple (the sampler's `context` is a table lookup)
and cannot collapse onto the CFG null. The null / negative prompt is the all-zeros context.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from cosjax.geometry import latent_frames  # re-exported: the toy strides time by its own factor
from cosjax.toy.config import IMAGE_CHANNELS, MASK_CHANNELS


def to_model_space(videos) -> jax.Array:
    """uint8 [B, F, H, W, 3] -> float32 [B, 3, F, H, W] in [-1, 1]."""
    x = jnp.asarray(videos).astype(jnp.float32) / 127.5 - 1.0
    return jnp.transpose(x, (0, 4, 1, 2, 3))


def from_model_space(x) -> np.ndarray:
    """float [B, 3, F, H, W] in [-1, 1] -> uint8 [B, F, H, W, 3] (clipped, rounded).

    In float32 as the inverse of `to_model_space`, not `cosjax.outputs.scale_to_uint8` (float64): the
    two differ on rare near-ties, and the toy's recorded outputs come from this one."""
    x = np.asarray(x, np.float32).transpose(0, 2, 3, 4, 1)
    return np.clip(np.round((x + 1.0) * 127.5), 0, 255).astype(np.uint8)


def pool_frames(x, pool: int) -> jax.Array:
    """Average-pools [B, C, F, H, W] by `pool` over H and W -> [B, C, F, H / pool, W / pool]."""
    if pool == 1:
        return jnp.asarray(x)
    b, c, f, h, w = x.shape
    return jnp.asarray(x).reshape(b, c, f, h // pool, pool, w // pool, pool).mean((4, 6))


def encode_videos(
    videos, space: str = "delta", pool: int = 1, stride: int = 1, scale: float = 1.0
) -> jax.Array:
    """uint8 [B, F, H, W, 3] videos -> the toy's latents, float32 [B, 3, F', H / pool, W / pool].

    "pixel": `to_model_space`. "delta": (x - x[:, :, :1]) / 2, the change from the first frame in
    [-1, 1]. The delta space is the toy's stand-in for a VAE: everything the prompt does not move is
    exactly 0, so the model spends its capacity on what changes instead of re-drawing the scene
    (a 900-step pixel-space run still blurred the static scene: last-frame MAE 27.9 / 255).

    With pool > 1 the latents are average-pooled pool x pool blocks; with stride > 1 only the
    keyframes 0, stride, 2 stride, ... are kept (F' = (F - 1) / stride + 1, Wan's VAE geometry for
    stride 4: 9 frames -> 3 latent frames). Together a fixed linear "VAE", decoded by nearest
    upsampling and linear interpolation between keyframes. `scale` multiplies the result, the toy's
    counterpart of the Wan VAE's latent normalisation: the delta of a sparse scene has rms ~0.1, so
    unscaled nearly every noise level hides it (see experiments/train_toy.py for the measurements).
    """
    x = to_model_space(videos)
    latent_frames(x.shape[2], stride)
    x = x if space == "pixel" else 0.5 * (x - x[:, :, :1])
    return scale * pool_frames(x[:, :, ::stride], pool)


def decode_latents(
    latents, first_frames, space: str = "delta", pool: int = 1, stride: int = 1, scale: float = 1.0
) -> np.ndarray:
    """Inverse of `encode_videos`: float [B, 3, F', H', W'] -> uint8 [B, (F' - 1) stride + 1, H, W, 3].

    first_frames: uint8 [B, H, W, 3] (only used by the "delta" space). Frames between keyframes are
    linear interpolations; the keyframes themselves (the last one included) round-trip exactly.
    """
    x = np.asarray(latents, np.float32) / scale
    if stride > 1:
        f = x.shape[2]
        pos = np.arange((f - 1) * stride + 1) / stride
        lo = np.minimum(np.floor(pos).astype(int), f - 1)
        hi = np.minimum(lo + 1, f - 1)
        w = (pos - lo).astype(np.float32)[None, None, :, None, None]
        x = (1.0 - w) * x[:, :, lo] + w * x[:, :, hi]
    if pool > 1:
        x = np.repeat(np.repeat(x, pool, axis=3), pool, axis=4)
    if space == "delta":
        first = np.asarray(first_frames).astype(np.float32) / 127.5 - 1.0
        x = 2.0 * x + first.transpose(0, 3, 1, 2)[:, :, None]
    return from_model_space(x)


def i2v_condition(first_frames, num_frames: int, pool: int = 1) -> jax.Array:
    """The pixel I2V conditioning y: uint8 [B, H, W, 3] first frames -> float32 [B, 7, F, H, W].

    Channels 0-3: ones on frame 0, zeros elsewhere; channels 4-6: the first frame in [-1, 1] on
    frame 0, zeros on frames 1..F-1.
    """
    img = pool_frames(to_model_space(jnp.asarray(first_frames)[:, None]), pool)  # [B, 3, 1, H', W']
    b, _, _, h, w = img.shape
    pad = ((0, 0), (0, 0), (0, num_frames - 1), (0, 0), (0, 0))
    mask = jnp.pad(jnp.ones((b, MASK_CHANNELS, 1, h, w), jnp.float32), pad)
    return jnp.concatenate([mask, jnp.pad(img, pad)], axis=1)


def prompt_embeddings(seed: int, num_prompts: int, text_len: int, text_dim: int) -> np.ndarray:
    """Fixed random prompt embeddings, float32 [num_prompts, text_len, text_dim], N(0, 1)."""
    rng = np.random.default_rng([seed, 0x7E47])
    return rng.standard_normal((num_prompts, text_len, text_dim)).astype(np.float32)


def toy_conditioning(first_frames, context, num_frames: int, cfg: bool = True, pool: int = 1):
    """A `Conditioning` for the sampler in the pixel I2V layout.

    Args:
      first_frames: uint8 [B, H, W, 3].
      context: float32 [B, L_txt, text_dim] prompt embeddings (rows of the exported table).
      num_frames: F, frames to generate (frame 0 included).
      cfg: add the zeros negative context (the CFG null the model was trained with).

    Returns:
      Conditioning with latent_shape (B, 3, F, H, W); decode `Result.latents` with `from_model_space`.
    """
    from cosjax.sampling.sampler import Conditioning

    context = jnp.asarray(context, jnp.float32)
    first_frames = np.asarray(first_frames)
    b, h, w, _ = first_frames.shape
    return Conditioning(
        context=context,
        negative=jnp.zeros_like(context) if cfg else None,
        y=i2v_condition(first_frames, num_frames, pool),
        latent_shape=(b, IMAGE_CHANNELS, num_frames, h // pool, w // pool),
    )
