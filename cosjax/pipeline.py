"""Pipeline: a loaded model plus the glue from inputs (image, prompt embeddings) to a sampler.

    pipe = Pipeline.from_pretrained("ckpt/vbvr-wan2.2", preset="vbvr")
    cond = pipe.condition(image=img, prompt_embeds=ctx, frames=33)
    out = jax.jit(pipe.sampler())(cond, jax.random.key(1))

Sampling presets are data (`cosjax.configs.SAMPLING_PRESETS`):
  * "official": the checkpoint's Wan2.x defaults (`configs.SamplingDefaults`): UniPC on the
    official grid, its steps, shift, per-expert guidance and MoE boundary.
  * "vbvr": what VBVR-Wan2.2 and the paper run (`paper-and-vbvr.md` 1.3): 50 Euler steps on the
    DiffSynth grid, shift 5, CFG 5.0 for both experts, boundary 0.875, Wan's default negative
    prompt, seed 1; in bfloat16 with DiffSynth's rounding points (`SamplerSettings.rounding`).
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from cosjax import configs, geometry, preprocess
from cosjax.configs import VAE_FILES, DiTConfig, ModelPreset, get_sampling_preset, preset_for
from cosjax.memory import MemoryPlan, check_fits, plan_memory
from cosjax.models import vae as vae_lib
from cosjax.outputs import VIDEO_QUALITY, to_uint8, write_mp4
from cosjax.parallel import replicated, spread
from cosjax.paths import user_path
from cosjax.sampling.build import build_sampler
from cosjax.sampling.noise import NOISE_SOURCES, reference_noise
from cosjax.sampling.sampler import Conditioning, Sampler, SamplerSettings
from cosjax.text import TextEncoder
from cosjax.weights.loading import LoadedDiT, load_dit
from cosjax.weights.read import load_vae

log = logging.getLogger(__name__)
# On a mesh, the VAE and the text encoder are replicated when their parameters take at most this many
# bytes, and sharded over every device otherwise (see `Pipeline.from_pretrained`).
REPLICATE_LIMIT_BYTES = 2**30

SAMPLING_PRESETS = tuple(configs.SAMPLING_PRESETS)  # the names
VBVR_SEED = 1
# Wan's default negative prompt (`wan/configs/shared_config.py`, sample_neg_prompt), used by the
# official pipelines and VBVR whenever no negative prompt is given.
WAN_NEGATIVE_PROMPT = (
    "色调艳丽，过曝，静态，细节模糊不清，字幕，风格，作品，画作，画面，静止，整体发灰，最差质量，低质量，"
    "JPEG压缩残留，丑陋的，残缺的，多余的手指，画得不好的手部，画得不好的脸部，畸形的，毁容的，形态畸形的肢体，"
    "手指融合，静止不动的画面，杂乱的背景，三条腿，背景人很多，倒着走"
)


def sampler_settings(model: ModelPreset, preset: str, num_experts: int) -> SamplerSettings:
    """The SamplerSettings of sampling preset `preset` ("official" or "vbvr") for `model`."""
    return SamplerSettings(**get_sampling_preset(preset).resolve(model, num_experts))


def match_model(config: DiTConfig, num_experts: int | None = None) -> ModelPreset:
    """The named model whose DiT is `config`; a derived preset for unnamed architectures
    (`cosjax.configs.preset_for`)."""
    return preset_for(config, num_experts)


def default_vae_path(path: str | Path, model: ModelPreset) -> Path | None:
    """The VAE a model folder holds: `vae/` (converted or Diffusers), else the official repo's
    root-level file of the model's VAE (`configs.VAE_FILES`: `Wan2.2_VAE.pth` for TI2V-5B)."""
    root = user_path(path)
    official = VAE_FILES[model.vae]
    for candidate in (root / "vae", root / official):
        if candidate.is_dir() if candidate.name == "vae" else candidate.is_file():
            return candidate
    return None


def image_to_array(image: Any) -> np.ndarray:
    """An RGB image (PIL image, path, or uint8 / float [H, W, 3] array) -> float32 [3, H, W] in [-1, 1]."""
    return preprocess.to_signed(preprocess.load_rgb(image))


def truncate_text(embeds: jax.Array, text_len: int) -> jax.Array:
    """Keeps the first `text_len` tokens of [B, L, D] prompt embeddings, warning when it cuts."""
    if embeds.shape[1] > text_len:
        log.warning("prompt has %d tokens; truncated to %d as the reference does", embeds.shape[1], text_len)
        return embeds[:, :text_len]
    return embeds


def i2v_mask(latent_frames: int, height: int, width: int) -> jax.Array:
    """The 4-channel I2V mask [1, 4, T, H, W]: ones on latent frame 0, zeros elsewhere."""
    return jnp.zeros((1, 4, latent_frames, height, width), jnp.float32).at[:, :, 0].set(1.0)


@dataclasses.dataclass
class VAE:
    """A Wan VAE bound to its weights: `encode(video) -> latents`, `decode(latents) -> video`.

    Video float32 [B, 3, F, H, W] in [-1, 1] (F = 4k + 1); latents normalised as the pipelines use
    them, [B, z_dim, (F - 1) / 4 + 1, H / s, W / s] (see `cosjax.models.vae`).
    """

    config: vae_lib.VAEConfig
    params: Any

    @classmethod
    def load(cls, path: str | Path, allow_nonfinite: bool = False) -> VAE:
        """Loads a VAE: a folder written by `cosjax convert` (its `vae/`, or the converted folder), an
        official `Wan2.x_VAE.pth`, or the Diffusers layout (a pipeline folder with `vae/`, the VAE
        folder, or its file). See `cosjax.weights.read.load_vae`."""
        return cls(*load_vae(path, allow_nonfinite=allow_nonfinite))

    def encode(self, video: jax.Array) -> jax.Array:
        return vae_lib.encode(self.params, video, self.config)

    def decode(self, latents: jax.Array) -> jax.Array:
        return vae_lib.decode(self.params, latents, self.config)


@dataclasses.dataclass
class Pipeline:
    """A Wan model ready to sample: the DiT (one expert or two), its named preset and settings.

    Attributes:
      dit: the loaded DiT.
      model: the named model preset (architecture, VAE geometry, official defaults).
      settings: the sampler settings of the chosen sampling preset.
      vae: an object with `encode(video [B, 3, F, H, W]) -> latents` and `decode(latents)`, or None.
      text_encoder: a callable `prompts -> [B, L, text_dim]` embeddings, or None.
      preset: the sampling preset ("official" or "vbvr"); it also picks the first-frame
        preprocessing (`cosjax.preprocess`).
      mesh: the device mesh the model was placed on (None: one device).
    """

    dit: LoadedDiT
    model: ModelPreset
    settings: SamplerSettings
    vae: Any = None
    text_encoder: Any = None
    preset: str = "official"
    mesh: Mesh | None = None

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        preset: str = "official",
        dtype: str | None = None,
        vae: str | Path | None = None,
        text_encoder: str | Path | None = None,
        cache_dir: str | Path | None = None,
        allow_nonfinite: bool = False,
        mesh: Mesh | None = None,
    ) -> Pipeline:
        """Loads the DiT at `path` (a converted folder or PyTorch weights) with sampling preset `preset`.

        Args:
          path: the DiT (see `load_dit`): a local path (relative or absolute) or a URL (`gs://...`,
            converted folders only). A folder that `cosjax convert` wrote from a whole repo also
            holds `vae/`, `text_encoder/` and `tokenizer/`, which are then loaded by default.
          preset: "official" or "vbvr".
          dtype: DiT parameter dtype (None: as stored).
          vae: a converted, official `.pth` or Diffusers-layout VAE; default `path/vae` when it
            exists, else the official repo's root-level `Wan2.1_VAE.pth` (`Wan2.2_VAE.pth` for
            TI2V). Without one the pipeline samples from latents only (no image conditioning, no
            decoding).
          text_encoder: a repo folder with the umT5 tokenizer and weights (converted, official or
            Diffusers layout, see `TextEncoder.from_pretrained`); default `path` itself when it holds
            them. Without one, prompts must come as embeddings.
          cache_dir: on-disk prompt-embedding cache of the text encoder (None: no cache).
          allow_nonfinite: load weights holding NaN or inf (by default refused, naming key and file).
          mesh: place the model on this device mesh (`cosjax.parallel.make_mesh`); None: one device.
            Every DiT expert is restored straight into its `param_shardings` (a converted folder:
            each host reads only its shards; PyTorch weights: leaf by leaf). The VAE (Wan2.1 VAE:
            127M parameters, 0.5 GB in float32) is replicated: it is small, and replicated weights
            make its convolutions run without communication on whatever device holds the latents.
            The text encoder is replicated when its parameters fit in `REPLICATE_LIMIT_BYTES`
            (1 GiB) and otherwise sharded over all devices (`cosjax.parallel.spread`: umT5-XXL is
            5.7B parameters, 11.4 GB in bf16, which does not fit a 16 GB v5e chip beside the experts'
            shards; sharded it takes 1/N of each device). It is not offloaded to host memory: it
            runs once per distinct prompt (and not at all on a cache hit), and sharding costs less
            than moving 11 GB per call.
        """
        get_sampling_preset(preset)  # an unknown name fails before any loading
        path = user_path(path)
        dit = load_dit(path, dtype=dtype, allow_nonfinite=allow_nonfinite, mesh=mesh)
        model = match_model(dit.config, len(dit.experts))
        vae_path = user_path(vae) if vae is not None else default_vae_path(path, model)
        loaded_vae = VAE.load(vae_path, allow_nonfinite) if vae_path is not None else None
        te_path = user_path(text_encoder) if text_encoder is not None else path
        has_te = (te_path / "text_encoder").is_dir() or (
            te_path / "models_t5_umt5-xxl-enc-bf16.pth"
        ).is_file()
        encoder = (
            TextEncoder.from_pretrained(te_path, cache_dir=cache_dir, allow_nonfinite=allow_nonfinite)
            if text_encoder or has_te
            else None
        )
        settings = sampler_settings(model, preset, len(dit.experts))
        if mesh is not None:
            if loaded_vae is not None:
                loaded_vae.params = replicated(loaded_vae.params, mesh)
            if encoder is not None:
                encoder.params = place_component(encoder.params, mesh)
        return cls(dit, model, settings, vae=loaded_vae, text_encoder=encoder, preset=preset, mesh=mesh)

    def sampler(self, **overrides) -> Sampler:
        """The pure sampling function `(cond, key, plan=None) -> Result` (`build_sampler`: the
        checkpoint's dtype, the platform's attention, the pipeline's mesh); `overrides` replace fields
        of the preset's SamplerSettings (steps, shift, guide_scale, boundary, grid, solver)."""
        settings = dataclasses.replace(self.settings, **overrides)
        return build_sampler(self.dit, settings, mesh=self.mesh)

    def condition(
        self,
        image: Any = None,
        prompt: str | None = None,
        negative_prompt: str | None = None,
        *,
        prompt_embeds: jax.Array | None = None,
        negative_embeds: jax.Array | None = None,
        frames: int | None = None,
        height: int | None = None,
        width: int | None = None,
        max_area: int | None = None,
        cfg: bool = True,
        noise: str = "jax",
        seed: int = VBVR_SEED,
    ) -> Conditioning:
        """Encodes one run's inputs into a `Conditioning` (batch 1).

        The first frame is sized and resized by the reference pipeline of `self.preset`
        (`cosjax.preprocess`): "official" torch-bicubic (I2V) or Lanczos cover-and-crop (TI2V),
        "vbvr" DiffSynth's PIL bicubic to the size rounded up to a multiple of VAE stride x patch.

        Args:
          image: first frame for I2V / TI2V (PIL, path or [H, W, 3] array, uint8 or float in [0, 1]).
          prompt, negative_prompt: text (needs a text encoder); the negative prompt defaults to
            Wan's. Or give `prompt_embeds` / `negative_embeds` [1, L, text_dim] directly.
          frames: pixel frames, 4k + 1 (default: the model's).
          height, width: pixel size (default: from `max_area` when given, else the image's, else the
            model's default size).
          max_area: the official scripts' area budget (`generate.py --size`, e.g. 720 * 1280): the size
            follows the image's aspect ratio within it (official I2V and TI2V rules).
          cfg: run classifier-free guidance (needs negative embeddings).
          noise: "jax" (the sampler draws N(0, I) from its key) or "reference": the initial latents
            DiffSynth draws for `seed` with torch's CPU generator (`cosjax.sampling.noise`; needs
            torch), set as `Conditioning.noise`.
          seed: the seed of noise="reference" (default VBVR_SEED, the seed of VBVR's scripts).

        Raises:
          ValueError for a frame count that is not 4k + 1 (0 included), a size the model cannot tile,
          an I2V model without an image, or a T2V model given one (it would be ignored).
        """
        if noise not in NOISE_SOURCES:
            raise ValueError(f"unknown noise source {noise!r}; use one of {', '.join(NOISE_SOURCES)}")
        cfg_dit, model = self.dit.config, self.model
        if image is not None and cfg_dit.model_type == "t2v":
            raise ValueError(
                f"this is a text-to-video model ({model.name}): it takes no image; drop image=, or load an "
                "I2V or TI2V checkpoint"
            )
        st, sh, sw = model.vae_stride
        latent_frames = geometry.latent_frames(model.sampling.frame_num if frames is None else frames, st)
        rgb = None if image is None else preprocess.load_rgb(image)
        height, width = preprocess.video_size(
            None if rgb is None else rgb.shape[:2],
            self.preset,
            cfg_dit.model_type,
            (sh, sw),
            cfg_dit.patch_size[1:],
            model.sampling.size[::-1],
            height,
            width,
            max_area,
        )
        lat_h, lat_w = geometry.latent_size(height, width, (sh, sw), cfg_dit.patch_size)
        pixels = (
            None
            if rgb is None
            else preprocess.first_frame(rgb, height, width, self.preset, cfg_dit.model_type)
        )
        context = self._embed(prompt, prompt_embeds, "prompt")
        negative = None
        if cfg:
            negative = self._embed(negative_prompt or WAN_NEGATIVE_PROMPT, negative_embeds, "negative prompt")
        shape = (1, cfg_dit.out_dim, latent_frames, lat_h, lat_w)
        y = first_frame = None
        if cfg_dit.model_type == "i2v":
            if pixels is None:
                raise ValueError("an I2V model needs an image")
            video = jnp.zeros((1, 3, geometry.pixel_frames(latent_frames, st), height, width), jnp.float32)
            video = video.at[:, :, 0].set(jnp.asarray(pixels))
            y = jnp.concatenate([i2v_mask(latent_frames, lat_h, lat_w), self._vae().encode(video)], axis=1)
        elif cfg_dit.model_type == "ti2v" and pixels is not None:
            first_frame = self._vae().encode(jnp.asarray(pixels)[None, :, None])
        initial = jnp.asarray(reference_noise(shape, seed)) if noise == "reference" else None
        cond = Conditioning(
            context=context,
            negative=negative,
            y=y,
            first_frame=first_frame,
            noise=initial,
            latent_shape=shape,
        )
        # on a mesh, no input may stay committed to one device when it meets the sampler's program
        return cond if self.mesh is None else replicated(cond, self.mesh)

    def check_memory(
        self, frames: int, height: int, width: int, mesh=None, device_bytes: int | None = None
    ) -> MemoryPlan:
        """Plans per-device memory for sampling this video on `mesh` and raises a ValueError naming a
        fix (more fsdp devices, context parallelism, bf16, ...) before anything compiles when it
        cannot fit. `device_bytes` defaults to the first device's memory limit; CPU devices report
        none, so on CPU nothing is checked unless it is given."""
        from cosjax.models.attention import default_backend

        mesh = self.mesh if mesh is None else mesh
        plan = plan_memory(
            self.dit.config,
            len(self.dit.experts),
            frames,
            height,
            width,
            mesh_shape=None if mesh is None else dict(mesh.shape),
            param_dtype=self.dit.dtype,
            compute_dtype=self.dit.dtype,
            attention="xla" if default_backend() == "xla" else "flash",
            vae_stride=self.model.vae_stride,
            solver=self.settings.solver,
        )
        limit = device_bytes or (jax.local_devices()[0].memory_stats() or {}).get("bytes_limit")
        return check_fits(plan, limit) if limit else plan

    def decode(self, latents: jax.Array) -> jax.Array:
        """Latents [B, C, T, H, W] -> video float32 [B, 3, F, H', W'] in [-1, 1]."""
        return self._vae().decode(latents)

    def video_uint8(self, video: jax.Array) -> np.ndarray:
        """Video [..., 3, F, H, W] in [-1, 1] -> uint8 of the same shape, quantised as the reference of
        `self.preset` does it (`cosjax.outputs.to_uint8`: truncation, in bf16 for "vbvr")."""
        return to_uint8(video, self.preset)

    def save_video(self, video: jax.Array, path: str | Path, fps: int | None = None) -> Path:
        """Writes video [3, F, H, W] or [1, 3, F, H, W] in [-1, 1] as an mp4 (atomically), quantised and
        encoded as the preset's reference writes it (imageio quality 8 official, 5 vbvr), at `fps`
        (None: the model's, `ModelPreset.fps`)."""
        frames = np.asarray(video)
        frames = self.video_uint8(frames[0] if frames.ndim == 5 else frames).transpose(1, 2, 3, 0)
        fps = self.model.fps if fps is None else fps
        return write_mp4(path, frames, fps=fps, quality=VIDEO_QUALITY[self.preset])

    def _embed(self, text: str | None, embeds: jax.Array | None, what: str) -> jax.Array:
        if embeds is not None:
            embeds = jnp.asarray(embeds, jnp.float32)
            if embeds.ndim != 3 or embeds.shape[0] != 1 or embeds.shape[2] != self.dit.config.text_dim:
                raise ValueError(
                    f"{what} embeddings must be [1, L, {self.dit.config.text_dim}], got {embeds.shape}"
                )
            return truncate_text(embeds, self.dit.config.text_len)
        if self.text_encoder is None:
            raise ValueError(
                f"this pipeline has no text encoder: pass {what} embeddings ({what.split()[0]}_embeds)"
            )
        return truncate_text(self.text_encoder([text or ""]), self.dit.config.text_len)

    def _vae(self):
        if self.vae is None:
            raise ValueError("this pipeline has no VAE loaded; image conditioning and decoding need one")
        return self.vae


def place_component(params, mesh: Mesh, limit: int = REPLICATE_LIMIT_BYTES):
    """A VAE's or text encoder's parameters on `mesh`: replicated when they take at most `limit`
    bytes, otherwise sharded over every device (`cosjax.parallel.spread`)."""
    size = sum(leaf.nbytes for leaf in jax.tree.leaves(params))
    return replicated(params, mesh) if size <= limit else spread(params, mesh)
