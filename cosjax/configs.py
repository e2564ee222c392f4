"""Typed configs and named presets: every fact about a Wan model that is not in its weights.

Numbers follow the official Wan2.2 / Wan2.1 configs (see `docs/reference/wan22.md` section 1).
Three tables, each looked up by name:
  * `PRESETS` (`get_preset`): a model size, i.e. its DiT architecture and model type, its experts and
    MoE boundary, its VAE (a `VAE_PRESETS` name), its text encoder, its fps and official defaults.
  * `VAE_PRESETS` (`get_vae`): a Wan VAE's architecture, strides and latent statistics.
  * `SAMPLING_PRESETS` (`get_sampling_preset`): a way of sampling ("official", "vbvr") as data.
Nothing else in cosjax tells a model's type, VAE or boundary from names or channel counts; a new
model size is one `ModelPreset` entry here (README, "Presets").
"""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Mapping
from typing import Any, Literal, NamedTuple

ModelType = Literal["t2v", "i2v", "ti2v"]


# integer fields and their least value
_INT_FIELDS = {
    "dim": 1,
    "ffn_dim": 1,
    "num_heads": 1,
    "num_layers": 1,
    "in_dim": 1,
    "out_dim": 1,
    "text_len": 1,
    "text_dim": 1,
    "freq_dim": 2,
}


def _require_int(name: str, value, lo: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < lo:
        raise ValueError(f"DiTConfig field {name!r} must be an integer >= {lo}, got {value!r}")
    return int(value)


@dataclasses.dataclass(frozen=True)
class DiTConfig:
    """Architecture of one Wan DiT expert.

    Attributes:
      dim: hidden width D.
      ffn_dim: inner width of the feed-forward network.
      num_heads: attention heads; head_dim = dim // num_heads must be even.
      num_layers: number of transformer blocks.
      in_dim: input channels (16 T2V, 36 I2V = 16 noisy + 4 mask + 16 image latent, 48 TI2V).
      out_dim: output channels.
      model_type: "t2v", "i2v" (needs the `y` conditioning input) or "ti2v".
      patch_size: (pt, ph, pw) patch of the latent grid embedded into one token.
      text_len: the context is zero-padded to this many tokens (and attended to without a mask).
      text_dim: width of the text-encoder embeddings (umT5-XXL: 4096).
      freq_dim: width of the sinusoidal timestep embedding.
      eps: epsilon of every LayerNorm and RMSNorm in the DiT.
      rope_theta: RoPE base.
    """

    dim: int
    ffn_dim: int
    num_heads: int
    num_layers: int
    in_dim: int
    out_dim: int
    model_type: ModelType = "t2v"
    patch_size: tuple[int, int, int] = (1, 2, 2)
    text_len: int = 512
    text_dim: int = 4096
    freq_dim: int = 256
    eps: float = 1e-6
    rope_theta: float = 10000.0

    def __post_init__(self):
        self._check_types()
        if self.dim % self.num_heads:
            raise ValueError(f"dim {self.dim} is not divisible by num_heads {self.num_heads}")
        if self.head_dim % 2:
            raise ValueError(f"head_dim {self.head_dim} must be even for the rotary embedding")
        if self.model_type not in ("t2v", "i2v", "ti2v"):
            raise ValueError(f"unknown model_type {self.model_type!r}; expected t2v, i2v or ti2v")
        object.__setattr__(self, "patch_size", tuple(int(p) for p in self.patch_size))

    def _check_types(self) -> None:
        """Every field has its type (a config.json may hold "48" or [48]): a ValueError names the field."""
        for name, lo in _INT_FIELDS.items():
            object.__setattr__(self, name, _require_int(name, getattr(self, name), lo))
        for name in ("eps", "rope_theta"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not value > 0:
                raise ValueError(f"DiTConfig field {name!r} must be a positive number, got {value!r}")
            object.__setattr__(self, name, float(value))
        patch = self.patch_size
        if not isinstance(patch, list | tuple) or len(patch) != 3:
            raise ValueError(f"DiTConfig field 'patch_size' must be 3 positive integers, got {patch!r}")
        for p in patch:
            _require_int("patch_size", p, 1)
        if not isinstance(self.model_type, str):
            got = self.model_type
            raise ValueError(f"DiTConfig field 'model_type' must be t2v, i2v or ti2v, got {got!r}")

    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads

    @property
    def patch_volume(self) -> int:
        pt, ph, pw = self.patch_size
        return pt * ph * pw

    @property
    def rope_split(self) -> tuple[int, int, int]:
        """Real dims of the head vector rotated by frame, row and column position (44/42/42 at d=128)."""
        hw = 2 * (self.head_dim // 6)
        return (self.head_dim - 2 * hw, hw, hw)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> DiTConfig:
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - fields
        if unknown:
            raise ValueError(f"unknown DiTConfig fields {sorted(unknown)}")
        d = dict(d)
        if "patch_size" in d:
            d["patch_size"] = tuple(d["patch_size"])
        return cls(**d)


# Diffusers' `AutoencoderKLWan` defaults, the Wan2.1 VAE's per-channel latent statistics.
WAN21_LATENTS_MEAN = (
    -0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508,
    0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921,
)  # fmt: skip
WAN21_LATENTS_STD = (
    2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
    3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160,
)  # fmt: skip


@dataclasses.dataclass(frozen=True)
class VAEConfig:
    """Architecture of a Wan VAE; field names follow Diffusers `AutoencoderKLWan`'s config.

    Attributes:
      base_dim: encoder base width (Wan2.1: 96, Wan2.2: 160).
      decoder_base_dim: decoder base width; None means base_dim (Wan2.2: 256).
      z_dim: latent channels (16 or 48).
      dim_mult: width multipliers per level.
      num_res_blocks: residual blocks per encoder level (the decoder has one more).
      attn_scales: must be empty (no attention outside the middle blocks, as in both Wan VAEs).
      temperal_downsample: per encoder level transition, whether time is halved (exactly two True).
      is_residual: Wan2.2 blocks (AvgDown3D / DupUp3D shortcuts around each level).
      in_channels: encoder input channels after patchify (3, or 12 with patch_size 2).
      out_channels: decoder output channels before unpatchify.
      patch_size: pixel patchify factor (None or 1: none; Wan2.2: 2).
      scale_factor_temporal: time stride, 4.
      scale_factor_spatial: total spatial stride (8, or 16 with patch_size 2).
      latents_mean, latents_std: per-channel latent statistics, z_dim entries each.
    """

    base_dim: int = 96
    decoder_base_dim: int | None = None
    z_dim: int = 16
    dim_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2
    attn_scales: tuple[float, ...] = ()
    temperal_downsample: tuple[bool, ...] = (False, True, True)
    is_residual: bool = False
    in_channels: int = 3
    out_channels: int = 3
    patch_size: int | None = None
    scale_factor_temporal: int = 4
    scale_factor_spatial: int = 8
    latents_mean: tuple[float, ...] = WAN21_LATENTS_MEAN
    latents_std: tuple[float, ...] = WAN21_LATENTS_STD

    def __post_init__(self):
        for name in ("dim_mult", "attn_scales", "temperal_downsample", "latents_mean", "latents_std"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        object.__setattr__(self, "temperal_downsample", tuple(bool(t) for t in self.temperal_downsample))
        if self.attn_scales:
            raise ValueError(f"attn_scales={self.attn_scales} is not supported (Wan VAEs use [])")
        if len(self.temperal_downsample) != len(self.dim_mult) - 1:
            raise ValueError(
                f"temperal_downsample needs {len(self.dim_mult) - 1} entries, got {self.temperal_downsample}"
            )
        if sum(self.temperal_downsample) != 2 or self.scale_factor_temporal != 4:
            raise ValueError("only a temporal stride of 4 (two temporal downsamples) is supported")
        spatial = self.patch * 2 ** (len(self.dim_mult) - 1)
        if self.scale_factor_spatial != spatial:
            raise ValueError(
                f"scale_factor_spatial {self.scale_factor_spatial} != {spatial} implied by the config"
            )
        if len(self.latents_mean) != self.z_dim or len(self.latents_std) != self.z_dim:
            raise ValueError(f"latents_mean and latents_std need z_dim={self.z_dim} entries each")

    @property
    def patch(self) -> int:
        return self.patch_size or 1

    @property
    def video_channels(self) -> int:
        """Pixel channels of the video (in_channels before patchify)."""
        return self.in_channels // self.patch**2

    @classmethod
    def from_diffusers(cls, config: Mapping[str, Any]) -> VAEConfig:
        """From a Diffusers `config.json` dict.

        Keys starting with '_', 'dropout' and inference-only switches that do not change the weights
        (e.g. 'clip_output', written by newer Diffusers conversion scripts) are ignored.

        Raises:
          ValueError on any other key that is not an `AutoencoderKLWan` architecture field.
        """
        fields = {f.name for f in dataclasses.fields(cls)}
        ignored = {"dropout", "clip_output"}
        kwargs = {k: v for k, v in config.items() if not k.startswith("_") and k not in ignored}
        unknown = sorted(set(kwargs) - fields)
        if unknown:
            raise ValueError(f"unknown VAE config key(s) {unknown}")
        return cls(**kwargs)


# The Wan2.2 VAE: `vae22_diffusers_config` of Diffusers' `convert_wan_to_diffusers.py`, whose latent
# statistics are those hard-coded in the official `Wan2_2_VAE.__init__` (vae2_2.py).
WAN22_LATENTS_MEAN = (
    -0.2289, -0.0052, -0.1323, -0.2339, -0.2799, 0.0174, 0.1838, 0.1557,
    -0.1382, 0.0542, 0.2813, 0.0891, 0.1570, -0.0098, 0.0375, -0.1825,
    -0.2246, -0.1207, -0.0698, 0.5109, 0.2665, -0.2108, -0.2158, 0.2502,
    -0.2055, -0.0322, 0.1109, 0.1567, -0.0729, 0.0899, -0.2799, -0.1230,
    -0.0313, -0.1649, 0.0117, 0.0723, -0.2839, -0.2083, -0.0520, 0.3748,
    0.0152, 0.1957, 0.1433, -0.2944, 0.3573, -0.0548, -0.1681, -0.0667,
)  # fmt: skip
WAN22_LATENTS_STD = (
    0.4765, 1.0364, 0.4514, 1.1677, 0.5313, 0.4990, 0.4818, 0.5013,
    0.8158, 1.0344, 0.5894, 1.0901, 0.6885, 0.6165, 0.8454, 0.4978,
    0.5759, 0.3523, 0.7135, 0.6804, 0.5833, 1.4146, 0.8986, 0.5659,
    0.7069, 0.5338, 0.4889, 0.4917, 0.4069, 0.4999, 0.6866, 0.4093,
    0.5709, 0.6065, 0.6415, 0.4944, 0.5726, 1.2042, 0.5458, 1.6887,
    0.3971, 1.0600, 0.3943, 0.5537, 0.5444, 0.4089, 0.7468, 0.7744,
)  # fmt: skip

# The VAEs by name. The official `.pth` files carry no config: their architecture is this table.
VAE_PRESETS: dict[str, VAEConfig] = {
    "wan2.1": VAEConfig(),  # Diffusers `AutoencoderKLWan()` defaults: z16, stride (4, 8, 8)
    "wan2.2": VAEConfig(
        base_dim=160,
        decoder_base_dim=256,
        z_dim=48,
        is_residual=True,
        in_channels=12,
        out_channels=12,
        patch_size=2,
        scale_factor_temporal=4,
        scale_factor_spatial=16,
        latents_mean=WAN22_LATENTS_MEAN,
        latents_std=WAN22_LATENTS_STD,
    ),
}
# The file each VAE has at the root of the official Wan repos.
VAE_FILES: dict[str, str] = {"wan2.1": "Wan2.1_VAE.pth", "wan2.2": "Wan2.2_VAE.pth"}
# Text encoders by name -> the width of their embeddings. "none": the tiny random-weight presets,
# whose prompts come as embeddings.
TEXT_ENCODERS: dict[str, int | None] = {"umt5-xxl": 4096, "none": None}


def get_vae(name: str) -> VAEConfig:
    """The VAE called `name` ("wan2.1", "wan2.2"); raises ValueError listing the known names otherwise."""
    try:
        return VAE_PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown VAE preset {name!r}; known VAEs: {', '.join(VAE_PRESETS)}") from None


class GuideScale(NamedTuple):
    """Classifier-free guidance scales per expert, in the official order (low-noise, high-noise).

    A tuple, so `(3.0, 4.0)` and `GuideScale(3.0, 4.0)` compare equal and unpack alike; the names
    say which expert each scale is for. Single-expert models use `low_noise` (set both alike).
    """

    low_noise: float
    high_noise: float

    @classmethod
    def of(cls, value: float | tuple[float, float] | list[float]) -> GuideScale:
        """One scale for both experts, or a (low-noise, high-noise) pair."""
        if isinstance(value, numbers.Real):
            return cls(float(value), float(value))
        if len(value) != 2:
            raise ValueError(f"guide_scale must be one number or (low_noise, high_noise), got {value!r}")
        return cls(float(value[0]), float(value[1]))


@dataclasses.dataclass(frozen=True)
class SamplingDefaults:
    """Official pipeline defaults of a checkpoint (`wan22.md` section 1.2).

    `guide_scale` is a `GuideScale` (low-noise expert, high-noise expert), the official order;
    single-expert models use the same value twice. `boundary` is the fraction of the 1000 training
    timesteps at and above which the high-noise expert runs (None for single-expert models). `fps`
    is the frame rate the model was trained at: the one source of the rate its videos are written at.
    """

    steps: int
    shift: float
    guide_scale: GuideScale
    boundary: float | None
    frame_num: int
    fps: int
    size: tuple[int, int]  # (width, height)

    def __post_init__(self):
        object.__setattr__(self, "guide_scale", GuideScale.of(self.guide_scale))


@dataclasses.dataclass(frozen=True)
class ModelPreset:
    """A named model: its DiT and model type, its experts, its VAE and text encoder, its defaults.

    Attributes:
      name: the preset's name (`PRESETS` key).
      dit: the DiT architecture; `dit.model_type` is the model type (t2v / i2v / ti2v).
      experts: the DiT weight sets: ("high_noise", "low_noise") for the A14B mixtures (the high-noise
        expert serves t >= boundary), ("dit",) otherwise.
      sampling: the official defaults, MoE boundary and fps included.
      vae: the VAE, a `VAE_PRESETS` name; its z_dim is the DiT's out_dim.
      text_encoder: a `TEXT_ENCODERS` name; its width is the DiT's text_dim.
    """

    name: str
    dit: DiTConfig
    experts: tuple[str, ...]
    sampling: SamplingDefaults
    vae: str = "wan2.1"
    text_encoder: str = "umt5-xxl"

    @property
    def model_type(self) -> ModelType:
        return self.dit.model_type

    @property
    def boundary(self) -> float | None:
        """The MoE boundary (a fraction of the 1000 training timesteps); None for one expert."""
        return self.sampling.boundary

    @property
    def fps(self) -> int:
        return self.sampling.fps

    @property
    def vae_config(self) -> VAEConfig:
        """The VAE's architecture and latent statistics (`VAE_PRESETS[self.vae]`)."""
        return get_vae(self.vae)

    @property
    def vae_z_dim(self) -> int:
        return self.vae_config.z_dim

    @property
    def vae_stride(self) -> tuple[int, int, int]:
        """(temporal, height, width) stride from pixels to latents."""
        c = self.vae_config
        return (c.scale_factor_temporal, c.scale_factor_spatial, c.scale_factor_spatial)


_A14B = dict(dim=5120, ffn_dim=13824, num_heads=40, num_layers=40)

PRESETS: dict[str, ModelPreset] = {
    p.name: p
    for p in [
        ModelPreset(
            name="wan2.2-i2v-a14b",
            dit=DiTConfig(**_A14B, in_dim=36, out_dim=16, model_type="i2v"),
            experts=("high_noise", "low_noise"),
            sampling=SamplingDefaults(
                steps=40,
                shift=5.0,
                guide_scale=(3.5, 3.5),
                boundary=0.900,
                frame_num=81,
                fps=16,
                size=(1280, 720),
            ),
            vae="wan2.1",
            text_encoder="umt5-xxl",
        ),
        ModelPreset(
            name="wan2.2-t2v-a14b",
            dit=DiTConfig(**_A14B, in_dim=16, out_dim=16, model_type="t2v"),
            experts=("high_noise", "low_noise"),
            sampling=SamplingDefaults(
                steps=40,
                shift=12.0,
                guide_scale=(3.0, 4.0),
                boundary=0.875,
                frame_num=81,
                fps=16,
                size=(1280, 720),
            ),
            vae="wan2.1",
            text_encoder="umt5-xxl",
        ),
        ModelPreset(
            name="wan2.2-ti2v-5b",
            dit=DiTConfig(
                dim=3072, ffn_dim=14336, num_heads=24, num_layers=30, in_dim=48, out_dim=48, model_type="ti2v"
            ),
            experts=("dit",),
            sampling=SamplingDefaults(
                steps=50,
                shift=5.0,
                guide_scale=(5.0, 5.0),
                boundary=None,
                frame_num=121,
                fps=24,
                size=(1280, 704),
            ),
            vae="wan2.2",
            text_encoder="umt5-xxl",
        ),
        ModelPreset(
            name="wan2.1-t2v-1.3b",
            dit=DiTConfig(
                dim=1536, ffn_dim=8960, num_heads=12, num_layers=30, in_dim=16, out_dim=16, model_type="t2v"
            ),
            experts=("dit",),
            sampling=SamplingDefaults(
                steps=50,
                shift=5.0,
                guide_scale=(5.0, 5.0),
                boundary=None,
                frame_num=81,
                fps=16,
                size=(832, 480),
            ),
            vae="wan2.1",
            text_encoder="umt5-xxl",
        ),
        # Tiny random-weight configs for tests and the demo: same code paths, millisecond forwards.
        ModelPreset(
            name="tiny",
            dit=DiTConfig(
                dim=48,
                ffn_dim=96,
                num_heads=2,
                num_layers=2,
                in_dim=16,
                out_dim=16,
                model_type="t2v",
                text_dim=32,
                freq_dim=32,
            ),
            experts=("dit",),
            sampling=SamplingDefaults(
                steps=8, shift=5.0, guide_scale=(5.0, 5.0), boundary=None, frame_num=9, fps=8, size=(64, 48)
            ),
            vae="wan2.1",
            text_encoder="none",
        ),
        ModelPreset(
            name="tiny-i2v",
            dit=DiTConfig(
                dim=48,
                ffn_dim=96,
                num_heads=2,
                num_layers=2,
                in_dim=36,
                out_dim=16,
                model_type="i2v",
                text_dim=32,
                freq_dim=32,
            ),
            experts=("high_noise", "low_noise"),
            sampling=SamplingDefaults(
                steps=8, shift=5.0, guide_scale=(3.5, 3.5), boundary=0.900, frame_num=9, fps=8, size=(64, 48)
            ),
            vae="wan2.1",
            text_encoder="none",
        ),
        ModelPreset(
            name="tiny-ti2v",
            dit=DiTConfig(
                dim=48,
                ffn_dim=96,
                num_heads=2,
                num_layers=2,
                in_dim=48,
                out_dim=48,
                model_type="ti2v",
                text_dim=32,
                freq_dim=32,
            ),
            experts=("dit",),
            sampling=SamplingDefaults(
                steps=8, shift=5.0, guide_scale=(5.0, 5.0), boundary=None, frame_num=9, fps=8, size=(64, 64)
            ),
            vae="wan2.2",
            text_encoder="none",
        ),
    ]
}


def get_preset(name: str) -> ModelPreset:
    """Returns the preset called `name`; raises ValueError listing the known names otherwise."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown model preset {name!r}; known presets: {', '.join(PRESETS)}") from None


def preset_for(dit: DiTConfig, num_experts: int | None = None) -> ModelPreset:
    """The named model whose DiT is `dit`; for an unnamed architecture, a "custom-<type>" preset
    derived from the named model of the same model type that matches best (first its VAE's latent
    width `dit.out_dim`, then `num_experts`; ties: table order), whose VAE, text encoder, fps and
    defaults it takes.

    Raises:
      ValueError when no named model has that model type.
    """
    for preset in PRESETS.values():
        if preset.dit == dit:
            return preset
    same_type = [p for p in PRESETS.values() if p.model_type == dit.model_type]
    if not same_type:
        raise ValueError(f"no preset has a {dit.model_type} model; add a ModelPreset")
    base = max(same_type, key=lambda p: (p.vae_z_dim == dit.out_dim, len(p.experts) == num_experts))
    return dataclasses.replace(base, name=f"custom-{dit.model_type}", dit=dit)


def mixture_boundary(dit: DiTConfig) -> float | None:
    """The MoE boundary of a two-expert model whose checkpoint does not state one.

    The boundary of the two-expert preset whose DiT is `dit`; for an unnamed architecture, that of the
    first two-expert preset of the same model type (an official A14B layout of another size); None
    when no two-expert preset has that type.
    """
    mixtures = [p for p in PRESETS.values() if len(p.experts) == 2]
    for preset in mixtures:
        if preset.dit == dit:
            return preset.boundary
    same_type = [p for p in mixtures if p.model_type == dit.model_type]
    return same_type[0].boundary if same_type else None


@dataclasses.dataclass(frozen=True)
class SamplingPreset:
    """A way of sampling, as data; the fields left None take the model's official defaults.

    Attributes:
      name: the preset's name; it also names the first-frame rule (`cosjax.preprocess`) and the
        float -> uint8 and mp4 rules (`cosjax.outputs`) of the reference it follows.
      steps, shift: solver steps and the sigma shift (None: `SamplingDefaults`').
      guide_scale: CFG scale (low-noise expert, high-noise expert) (None: the model's).
      boundary: MoE boundary of two-expert models (None: the model's); single-expert models have none.
      grid: the sigma grid ("official" or "diffsynth", `cosjax.sampling.schedules`).
      solver: "unipc" or "euler".
      video_quality: imageio's mp4 quality of the reference's writer (official 8, DiffSynth 5).
      rounding: None (exact in the compute dtype) or "diffsynth" (bf16 at DiffSynth's rounding points).
    """

    name: str
    grid: str
    solver: str
    video_quality: int
    steps: int | None = None
    shift: float | None = None
    guide_scale: GuideScale | None = None
    boundary: float | None = None
    rounding: str | None = None

    def __post_init__(self):
        if self.guide_scale is not None:
            object.__setattr__(self, "guide_scale", GuideScale.of(self.guide_scale))

    def resolve(self, model: ModelPreset, num_experts: int) -> dict[str, Any]:
        """The `SamplerSettings` fields of this preset for `model` run with `num_experts` experts."""
        s = model.sampling
        boundary = (s.boundary if self.boundary is None else self.boundary) if num_experts == 2 else None
        return dict(
            steps=s.steps if self.steps is None else self.steps,
            shift=s.shift if self.shift is None else self.shift,
            guide_scale=s.guide_scale if self.guide_scale is None else self.guide_scale,
            boundary=boundary,
            grid=self.grid,
            solver=self.solver,
            rounding=self.rounding,
        )


SAMPLING_PRESETS: dict[str, SamplingPreset] = {
    p.name: p
    for p in [
        # the checkpoint's Wan2.x defaults: UniPC on the official grid, its steps, shift, guidance, boundary
        SamplingPreset("official", grid="official", solver="unipc", video_quality=8),
        # what VBVR-Wan2.2 and the paper run (`paper-and-vbvr.md` 1.3): 50 Euler steps on the DiffSynth
        # grid, shift 5, CFG 5 for both experts, boundary 0.875, in bf16 with DiffSynth's rounding
        SamplingPreset(
            "vbvr",
            grid="diffsynth",
            solver="euler",
            video_quality=5,
            steps=50,
            shift=5.0,
            guide_scale=(5.0, 5.0),
            boundary=0.875,
            rounding="diffsynth",
        ),
    ]
}


def get_sampling_preset(name: str) -> SamplingPreset:
    """The sampling preset called `name`; raises ValueError listing the known names otherwise."""
    try:
        return SAMPLING_PRESETS[name]
    except KeyError:
        known = ", ".join(SAMPLING_PRESETS)
        raise ValueError(f"unknown sampling preset {name!r}; use one of {known}") from None
