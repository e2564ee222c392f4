"""The Wan2.1 and Wan2.2 video VAEs in Flax (linen), matching Diffusers `AutoencoderKLWan`.

Layout at the public boundary is the PyTorch references' ([B, C, F, H, W]); inside, activations are
channels-last [B, T, H, W, C] and every computation runs in float32 (the official VAE runs in float32).

Causality and chunks. Both the encoder and the decoder run chunk by chunk along time, exactly as the
reference does: the encoder on pixel frames 1, 4, 4, ... and the decoder on one latent frame at a
time. The first chunk is a separate call (the temporal resamplers treat it specially: the encoder's
time downsampling passes it through, the decoder's time upsampling skips it, Wan2.2's DupUp3D drops
the frames before it); the remaining chunks run in one `lax.scan` whose carry is the causal cache,
a pytree holding for every 3-tap causal conv the last two input frames seen (zeros before the
video starts) and for every encoder time downsampler the last frame. With this, every causal conv
equals a conv over the whole sequence with two zero frames in front, and the result is the
reference's, chunk boundaries included.

Memory. Activations exist for one chunk at a time: decode holds the activations of one latent
frame's worth of output (4 pixel frames at full resolution, times the widest full-resolution
channel count) plus the cache (two frames per causal conv at its own resolution), whatever the
video length; only the decoded video itself ([B, 3, F, H, W] float32, plus the scan's stacked copy
before the final transpose) grows with F. Encode likewise holds the input video plus one chunk of
four frames. Attention (middle blocks only) is per frame over (H/8)*(W/8) (Wan2.2: /16) positions.

Latents are normalised as the Diffusers pipelines do: z = (mu - latents_mean) * (1 / latents_std)
on encode (mu = the posterior mean, i.e. `latent_dist.mode()`), and z / (1 / latents_std) +
latents_mean before decoding; the decoded video is clamped to [-1, 1].
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from cosjax import geometry
from cosjax.configs import VAEConfig

HIGHEST = jax.lax.Precision.HIGHEST
Cache = dict[str, Any] | None

# ----------------------------------------------------------------------------------------------
# Layers. x is [B, T, H, W, C] float32 unless stated otherwise.


class Conv3d(nn.Module):
    """A Conv3d with 'same' spatial zero padding and no temporal padding: [B, T, H, W, C] -> [B, T', ...].

    Params: kernel [kt, kh, kw, C_in, C_out], bias [C_out] (PyTorch weight transposed).
    """

    features: int
    kernel_size: tuple[int, int, int] = (3, 3, 3)
    stride_t: int = 1

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kernel = self.param(
            "kernel", nn.initializers.lecun_normal(), (*self.kernel_size, x.shape[-1], self.features)
        )
        bias = self.param("bias", nn.initializers.zeros, (self.features,))
        ph, pw = self.kernel_size[1] // 2, self.kernel_size[2] // 2
        y = jax.lax.conv_general_dilated(
            x,
            kernel,
            window_strides=(self.stride_t, 1, 1),
            padding=((0, 0), (ph, ph), (pw, pw)),
            dimension_numbers=("NDHWC", "DHWIO", "NDHWC"),
            precision=HIGHEST,
        )
        return y + bias


class Conv2d(nn.Module):
    """A per-frame Conv2d: [B, T, H, W, C] -> [B, T, H', W', features].

    Params: kernel [kh, kw, C_in, C_out], bias [C_out]. padding: ((top, bottom), (left, right)).
    """

    features: int
    kernel_size: int = 3
    stride: int = 1
    padding: tuple[tuple[int, int], tuple[int, int]] = ((1, 1), (1, 1))

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        k = self.kernel_size
        kernel = self.param("kernel", nn.initializers.lecun_normal(), (k, k, x.shape[-1], self.features))
        bias = self.param("bias", nn.initializers.zeros, (self.features,))
        b, t = x.shape[:2]
        y = jax.lax.conv_general_dilated(
            x.reshape(b * t, *x.shape[2:]),
            kernel,
            window_strides=(self.stride, self.stride),
            padding=self.padding,
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
            precision=HIGHEST,
        )
        return (y + bias).reshape(b, t, *y.shape[1:])


def causal_conv(conv: Conv3d, x: jax.Array, cache: jax.Array | None) -> tuple[jax.Array, jax.Array | None]:
    """A causal conv over one chunk, continuing the previous chunks.

    Args:
      conv: a stride-1 Conv3d with temporal kernel kt.
      x: [B, T, H, W, C] the chunk.
      cache: [B, kt-1, H, W, C] the kt-1 input frames before the chunk; None means zeros (video start).

    Returns:
      (y [B, T, H, W, C_out], the new cache [B, kt-1, H, W, C], None when kt == 1).
    """
    k = conv.kernel_size[0] - 1
    if k == 0:
        return conv(x), None
    if cache is None:
        cache = jnp.zeros((x.shape[0], k, *x.shape[2:]), x.dtype)
    x = jnp.concatenate([cache, x], axis=1)
    return conv(x), x[:, -k:]


def _sub(cache: Cache, name: str):
    return None if cache is None else cache[name]


class RMSNorm(nn.Module):
    """x / max(||x||_2, 1e-12) * sqrt(C) * scale over channels (PyTorch `F.normalize`). Param scale [C]."""

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (c,))
        norm = jnp.sqrt(jnp.sum(jnp.square(x), axis=-1, keepdims=True))
        return x / jnp.maximum(norm, 1e-12) * (c**0.5) * scale


class ResidualBlock(nn.Module):
    """RMSNorm, SiLU, causal conv, RMSNorm, SiLU, causal conv; plus a 1x1x1 conv shortcut if widths differ."""

    out_dim: int

    @nn.compact
    def __call__(self, x: jax.Array, cache: Cache) -> tuple[jax.Array, Cache]:
        h = x if x.shape[-1] == self.out_dim else Conv3d(self.out_dim, (1, 1, 1), name="conv_shortcut")(x)
        y = nn.silu(RMSNorm(name="norm1")(x))
        y, c1 = causal_conv(Conv3d(self.out_dim, name="conv1"), y, _sub(cache, "conv1"))
        y = nn.silu(RMSNorm(name="norm2")(y))
        y, c2 = causal_conv(Conv3d(self.out_dim, name="conv2"), y, _sub(cache, "conv2"))
        return y + h, {"conv1": c1, "conv2": c2}


class AttentionBlock(nn.Module):
    """Single-head self-attention over the H*W positions of each frame, with a residual."""

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        b, t, h, w, c = x.shape
        qkv = Conv2d(3 * c, 1, padding=((0, 0), (0, 0)), name="to_qkv")(RMSNorm(name="norm")(x))
        q, k, v = jnp.split(qkv.reshape(b * t, h * w, 3 * c), 3, axis=-1)
        logits = jnp.einsum("nqc,nkc->nqk", q, k, precision=HIGHEST) / np.sqrt(c)
        out = jnp.einsum("nqk,nkc->nqc", jax.nn.softmax(logits, axis=-1), v, precision=HIGHEST)
        out = Conv2d(c, 1, padding=((0, 0), (0, 0)), name="proj")(out.reshape(b, t, h, w, c))
        return x + out


class MidBlock(nn.Module):
    """ResidualBlock, AttentionBlock, ResidualBlock at constant width."""

    @nn.compact
    def __call__(self, x: jax.Array, cache: Cache) -> tuple[jax.Array, Cache]:
        dim = x.shape[-1]
        x, c0 = ResidualBlock(dim, name="resnets_0")(x, _sub(cache, "resnets_0"))
        x = AttentionBlock(name="attentions_0")(x)
        x, c1 = ResidualBlock(dim, name="resnets_1")(x, _sub(cache, "resnets_1"))
        return x, {"resnets_0": c0, "resnets_1": c1}


class Resample(nn.Module):
    """Spatial (and temporal) ×2 down- or upsampling of one chunk, [B, T, H, W, C] -> [B, T', H', W', C'].

    mode: "downsample2d" | "downsample3d" | "upsample2d" | "upsample3d"; out_dim: the upsampling
    conv's width. `first` marks the video's first chunk, whose frame the temporal part passes
    through untouched (downsample3d) or does not double (upsample3d).
    """

    mode: str
    out_dim: int = 0

    @nn.compact
    def __call__(self, x: jax.Array, cache: Cache, first: bool) -> tuple[jax.Array, Cache]:
        dim = x.shape[-1]
        if self.mode == "upsample3d":
            x, cache = self._time_upsample(x, cache, first)
        if self.mode.startswith("upsample"):
            x = jnp.repeat(jnp.repeat(x, 2, axis=2), 2, axis=3)  # nearest(-exact) ×2
            return Conv2d(self.out_dim, 3, name="resample_1")(x), cache
        x = Conv2d(dim, 3, stride=2, padding=((0, 1), (0, 1)), name="resample_1")(x)
        if self.mode == "downsample3d":
            return self._time_downsample(x, cache, first)
        return x, cache

    def _time_upsample(self, x, cache, first):
        """[B, T, H, W, C] -> [B, 2T, H, W, C] (first chunk: unchanged, and the cache starts at zeros)."""
        conv = Conv3d(2 * x.shape[-1], (3, 1, 1), name="time_conv")
        if first:
            return x, {"time_conv": jnp.zeros((x.shape[0], 2, *x.shape[2:]), x.dtype)}
        y, c = causal_conv(conv, x, cache["time_conv"])
        b, t, h, w, _ = y.shape
        # channel half s holds output frame 2*t + s
        y = y.reshape(b, t, h, w, 2, -1).transpose(0, 1, 4, 2, 3, 5).reshape(b, 2 * t, h, w, -1)
        return y, {"time_conv": c}

    def _time_downsample(self, x, cache, first):
        """[B, T, H, W, C] -> [B, T/2, ...] via a stride-2 conv over (last frame before, the chunk)."""
        conv = Conv3d(x.shape[-1], (3, 1, 1), stride_t=2, name="time_conv")
        if first:
            return x, {"time_conv": x[:, -1:]}
        y = conv(jnp.concatenate([cache["time_conv"], x], axis=1))
        return y, {"time_conv": x[:, -1:]}


def avg_down(x: jax.Array, out_dim: int, factor_t: int, factor_s: int) -> jax.Array:
    """Wan2.2's parameter-free AvgDown3D shortcut: [B, T, H, W, C] -> [B, ceil(T/ft), H/fs, W/fs, out_dim].

    Front-pads T with zeros to a multiple of ft, folds (ft, fs, fs) sub-positions into channels
    (channel c * factor + (t_off * fs + h_off) * fs + w_off) and averages consecutive groups.
    """
    pad = (-x.shape[1]) % factor_t
    x = jnp.pad(x, ((0, 0), (pad, 0), (0, 0), (0, 0), (0, 0)))
    b, t, h, w, c = x.shape
    ft, fs = factor_t, factor_s
    x = x.reshape(b, t // ft, ft, h // fs, fs, w // fs, fs, c)
    x = x.transpose(0, 1, 3, 5, 7, 2, 4, 6).reshape(b, t // ft, h // fs, w // fs, out_dim, -1)
    return x.mean(axis=-1)


def dup_up(x: jax.Array, out_dim: int, factor_t: int, factor_s: int, first: bool) -> jax.Array:
    """Wan2.2's parameter-free DupUp3D shortcut, the inverse fold of `avg_down` with repeated channels.

    [B, T, H, W, C] -> [B, T*ft, H*fs, W*fs, out_dim]; on the first chunk the first ft-1 frames are dropped.
    """
    b, t, h, w, c = x.shape
    ft, fs = factor_t, factor_s
    x = jnp.repeat(x, out_dim * ft * fs * fs // c, axis=-1)
    x = x.reshape(b, t, h, w, out_dim, ft, fs, fs).transpose(0, 1, 5, 2, 6, 3, 7, 4)
    x = x.reshape(b, t * ft, h * fs, w * fs, out_dim)
    return x[:, ft - 1 :] if first else x


class ResidualDownBlock(nn.Module):
    """Wan2.2 encoder level: residual blocks and a downsampler, plus the AvgDown3D shortcut."""

    out_dim: int
    num_res_blocks: int
    temporal: bool
    down: bool

    @nn.compact
    def __call__(self, x: jax.Array, cache: Cache, first: bool) -> tuple[jax.Array, Cache]:
        shortcut = avg_down(x, self.out_dim, 2 if self.temporal else 1, 2 if self.down else 1)
        new = {}
        for j in range(self.num_res_blocks):
            name = f"resnets_{j}"
            x, new[name] = ResidualBlock(self.out_dim, name=name)(x, _sub(cache, name))
        if self.down:
            mode = "downsample3d" if self.temporal else "downsample2d"
            x, new["downsampler"] = Resample(mode, name="downsampler")(x, _sub(cache, "downsampler"), first)
        return x + shortcut, new


class UpBlock(nn.Module):
    """Decoder level: num_res_blocks + 1 residual blocks, then an upsampler (mode None: none).

    Wan2.1 names the upsampler `upsamplers_0` and halves the width in it; Wan2.2 (residual) names it
    `upsampler`, keeps the width and adds the DupUp3D shortcut around the level.
    """

    out_dim: int
    num_res_blocks: int
    mode: str | None
    residual: bool

    @nn.compact
    def __call__(self, x: jax.Array, cache: Cache, first: bool) -> tuple[jax.Array, Cache]:
        shortcut = None
        if self.residual and self.mode is not None:
            ft = 2 if self.mode == "upsample3d" else 1
            shortcut = dup_up(x, self.out_dim, ft, 2, first)
        new = {}
        for j in range(self.num_res_blocks + 1):
            name = f"resnets_{j}"
            x, new[name] = ResidualBlock(self.out_dim, name=name)(x, _sub(cache, name))
        if self.mode is None:
            return x, new
        name = "upsampler" if self.residual else "upsamplers_0"
        up_dim = self.out_dim if self.residual else self.out_dim // 2
        x, new[name] = Resample(self.mode, up_dim, name=name)(x, _sub(cache, name), first)
        return (x if shortcut is None else x + shortcut), new


class Encoder(nn.Module):
    """Pixels (patchified) [B, T, H, W, in_channels] -> [B, T', H/s, W/s, 2 z_dim] for one chunk."""

    config: VAEConfig

    @nn.compact
    def __call__(self, x: jax.Array, cache: Cache, first: bool) -> tuple[jax.Array, Cache]:
        config = self.config
        new = {}
        x, new["conv_in"] = causal_conv(Conv3d(config.base_dim, name="conv_in"), x, _sub(cache, "conv_in"))
        for n, block in enumerate(self._down_blocks()):
            name = f"down_blocks_{n}"
            block = block(name=name)
            if isinstance(block, ResidualBlock):
                x, new[name] = block(x, _sub(cache, name))
            else:
                x, new[name] = block(x, _sub(cache, name), first)
        x, new["mid_block"] = MidBlock(name="mid_block")(x, _sub(cache, "mid_block"))
        x = nn.silu(RMSNorm(name="norm_out")(x))
        conv_out = Conv3d(2 * config.z_dim, name="conv_out")
        x, new["conv_out"] = causal_conv(conv_out, x, _sub(cache, "conv_out"))
        return x, new

    def _down_blocks(self) -> list:
        """Factories of the `down_blocks` in order (Wan2.1: a flat list; Wan2.2: one block per level)."""
        config = self.config
        last = len(config.dim_mult) - 1
        blocks = []
        for i, m in enumerate(config.dim_mult):
            out_dim = config.base_dim * m
            temporal = config.temperal_downsample[i] if i != last else False
            if config.is_residual:
                blocks.append(
                    functools.partial(ResidualDownBlock, out_dim, config.num_res_blocks, temporal, i != last)
                )
                continue
            blocks += [functools.partial(ResidualBlock, out_dim)] * config.num_res_blocks
            if i != last:
                blocks.append(functools.partial(Resample, "downsample3d" if temporal else "downsample2d"))
        return blocks


class Decoder(nn.Module):
    """Latents [B, T, h, w, z_dim] -> pixels (patchified) [B, T', h*s, w*s, out_channels] for one chunk."""

    config: VAEConfig

    @nn.compact
    def __call__(self, x: jax.Array, cache: Cache, first: bool) -> tuple[jax.Array, Cache]:
        config = self.config
        base = config.decoder_base_dim or config.base_dim
        dims = [base * m for m in (config.dim_mult[-1], *config.dim_mult[::-1])]
        upsample_t = config.temperal_downsample[::-1]
        last = len(config.dim_mult) - 1
        new = {}
        x, new["conv_in"] = causal_conv(Conv3d(dims[0], name="conv_in"), x, _sub(cache, "conv_in"))
        x, new["mid_block"] = MidBlock(name="mid_block")(x, _sub(cache, "mid_block"))
        for i, out_dim in enumerate(dims[1:]):
            mode = None if i == last else ("upsample3d" if upsample_t[i] else "upsample2d")
            name = f"up_blocks_{i}"
            block = UpBlock(out_dim, config.num_res_blocks, mode, config.is_residual, name=name)
            x, new[name] = block(x, _sub(cache, name), first)
        x = nn.silu(RMSNorm(name="norm_out")(x))
        conv_out = Conv3d(config.out_channels, name="conv_out")
        x, new["conv_out"] = causal_conv(conv_out, x, _sub(cache, "conv_out"))
        return x, new


class WanVAE(nn.Module):
    """The VAE's chunk-level steps; `encode` / `decode` below run them over a whole video."""

    config: VAEConfig

    def setup(self):
        z = self.config.z_dim
        self.encoder = Encoder(self.config)
        self.quant_conv = Conv3d(2 * z, (1, 1, 1))
        self.post_quant_conv = Conv3d(z, (1, 1, 1))
        self.decoder = Decoder(self.config)

    def encode_chunk(self, x: jax.Array, cache: Cache, first: bool) -> tuple[jax.Array, Cache]:
        """[B, T, H, W, in_channels] -> (posterior mean [B, T', H/s, W/s, z_dim], cache)."""
        h, cache = self.encoder(x, cache, first)
        return self.quant_conv(h)[..., : self.config.z_dim], cache

    def decode_chunk(self, z: jax.Array, cache: Cache, first: bool) -> tuple[jax.Array, Cache]:
        """Unnormalised latents [B, T, h, w, z_dim] -> ([B, T', H, W, out_channels], cache)."""
        return self.decoder(self.post_quant_conv(z), cache, first)

    def __call__(self, x: jax.Array, z: jax.Array):
        """Touches every parameter (for `init`): a first and a second chunk of each path.

        x: [B, 1, H, W, in_channels]; z: [B, 1, h, w, z_dim].
        """
        h, cache = self.encode_chunk(x, None, True)
        h, _ = self.encode_chunk(jnp.repeat(x, self.config.scale_factor_temporal, axis=1), cache, False)
        y, cache = self.decode_chunk(z, None, True)
        y, _ = self.decode_chunk(z, cache, False)
        return h, y


def _dummy_inputs(config: VAEConfig):
    s = config.scale_factor_spatial // config.patch
    x = jnp.zeros((1, 1, s, s, config.in_channels), jnp.float32)
    return x, jnp.zeros((1, 1, 1, 1, config.z_dim), jnp.float32)


def abstract_params(config: VAEConfig):
    """Shapes and dtypes (float32) of the parameter pytree, without allocating it."""
    return jax.eval_shape(WanVAE(config).init, jax.random.key(0), *_dummy_inputs(config))["params"]


def init_params(config: VAEConfig, key: jax.Array):
    """Randomly initialised float32 parameters (for tests and training from scratch)."""
    return jax.jit(WanVAE(config).init)(key, *_dummy_inputs(config))["params"]


# ----------------------------------------------------------------------------------------------
# Whole-video encode / decode.


def _patchify(x: jax.Array, p: int) -> jax.Array:
    """[B, T, H, W, C] -> [B, T, H/p, W/p, C*p*p], channel c*p*p + w_off*p + h_off (Diffusers order)."""
    if p == 1:
        return x
    b, t, h, w, c = x.shape
    x = x.reshape(b, t, h // p, p, w // p, p, c).transpose(0, 1, 2, 4, 6, 5, 3)
    return x.reshape(b, t, h // p, w // p, c * p * p)


def _unpatchify(x: jax.Array, p: int) -> jax.Array:
    """The inverse of `_patchify`."""
    if p == 1:
        return x
    b, t, h, w, cpp = x.shape
    x = x.reshape(b, t, h, w, cpp // (p * p), p, p).transpose(0, 1, 2, 6, 3, 5, 4)
    return x.reshape(b, t, h * p, w * p, cpp // (p * p))


def _run_chunks(step, first_chunk: jax.Array, rest: jax.Array | None) -> jax.Array:
    """Runs `step(chunk, cache, first)` on the first chunk, then scans it over `rest`.

    Args:
      first_chunk: [B, T0, ...]; rest: [B, N, Tc, ...] or None.

    Returns:
      the outputs concatenated along time, [B, T0' + N * Tc', ...].
    """
    out, cache = step(first_chunk, None, True)
    if rest is None:
        return out

    def body(cache, chunk):
        y, cache = step(chunk, cache, False)
        return cache, y

    _, ys = jax.lax.scan(body, cache, jnp.moveaxis(rest, 1, 0))  # [N, B, Tc', ...]
    ys = jnp.moveaxis(ys, 0, 1)
    ys = ys.reshape(ys.shape[0], -1, *ys.shape[3:])
    return jnp.concatenate([out, ys], axis=1)


def _stats(config: VAEConfig) -> tuple[jax.Array, jax.Array]:
    mean = jnp.asarray(config.latents_mean, jnp.float32)
    inv_std = 1.0 / jnp.asarray(config.latents_std, jnp.float32)
    return mean, inv_std


def _check_video(video: jax.Array, config: VAEConfig) -> None:
    if video.ndim != 5 or video.shape[1] != config.video_channels:
        raise ValueError(
            f"video must be [B, {config.video_channels}, F, H, W], got shape {tuple(video.shape)}"
        )
    s = config.scale_factor_spatial
    geometry.latent_grid(*video.shape[2:], (config.scale_factor_temporal, s, s))


@functools.partial(jax.jit, static_argnames="config")
def encode(params, video: jax.Array, config: VAEConfig) -> jax.Array:
    """Encodes a video to normalised latents (the posterior mean).

    Args:
      params: the VAE parameter pytree.
      video: [B, 3, F, H, W] in [-1, 1], F = 4k+1, H and W multiples of scale_factor_spatial.
      config: the architecture (static).

    Returns:
      float32 [B, z_dim, k+1, H/s, W/s], (mu - latents_mean) * (1 / latents_std).

    Raises:
      ValueError for a wrong shape or a frame count that is not 4k+1.
    """
    _check_video(video, config)
    model = WanVAE(config)

    def step(x, cache, first):
        return model.apply({"params": params}, x, cache, first, method=WanVAE.encode_chunk)

    x = _patchify(jnp.moveaxis(video.astype(jnp.float32), 1, -1), config.patch)
    b, f = x.shape[:2]
    t = config.scale_factor_temporal
    rest = x[:, 1:].reshape(b, (f - 1) // t, t, *x.shape[2:]) if f > 1 else None
    mu = _run_chunks(step, x[:, :1], rest)
    mean, inv_std = _stats(config)
    return jnp.moveaxis((mu - mean) * inv_std, -1, 1)


@functools.partial(jax.jit, static_argnames="config")
def decode(params, latents: jax.Array, config: VAEConfig) -> jax.Array:
    """Decodes normalised latents to a video, one latent frame per scan step.

    Args:
      params: the VAE parameter pytree.
      latents: [B, z_dim, T, h, w] normalised as `encode` returns them.
      config: the architecture (static).

    Returns:
      float32 [B, 3, 4(T-1)+1, h*s, w*s] clamped to [-1, 1].
    """
    if latents.ndim != 5 or latents.shape[1] != config.z_dim:
        raise ValueError(f"latents must be [B, {config.z_dim}, T, h, w], got shape {tuple(latents.shape)}")
    model = WanVAE(config)

    def step(z, cache, first):
        return model.apply({"params": params}, z, cache, first, method=WanVAE.decode_chunk)

    mean, inv_std = _stats(config)
    z = jnp.moveaxis(latents.astype(jnp.float32), 1, -1) / inv_std + mean
    b, t = z.shape[:2]
    rest = z[:, 1:, None] if t > 1 else None
    out = _unpatchify(_run_chunks(step, z[:, :1], rest), config.patch)
    return jnp.moveaxis(jnp.clip(out, -1.0, 1.0), -1, 1)


def latent_shape(video_shape: Sequence[int], config: VAEConfig) -> tuple[int, int, int, int, int]:
    """[B, 3, F, H, W] -> the [B, z_dim, T, h, w] that `encode` returns."""
    b, _, f, h, w = video_shape
    s = config.scale_factor_spatial
    return geometry.latent_shape(b, config.z_dim, f, h, w, (config.scale_factor_temporal, s, s))
