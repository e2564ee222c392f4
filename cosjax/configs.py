"""Typed configs and named presets for the Wan models cosjax runs.

Numbers follow the official Wan2.2 / Wan2.1 configs (see `shared/reference/wan22.md` section 1).
A preset bundles the DiT architecture with the pipeline defaults that belong to that checkpoint;
`get_preset(name)` is the one way to look them up.
"""

from __future__ import annotations

import dataclasses
import numbers
from typing import Literal

ModelType = Literal["t2v", "i2v", "ti2v"]


# integer fields and their least value
_INT_FIELDS = {
    "dim": 1, "ffn_dim": 1, "num_heads": 1, "num_layers": 1, "in_dim": 1, "out_dim": 1,
    "text_len": 1, "text_dim": 1, "freq_dim": 2,
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


@dataclasses.dataclass(frozen=True)
class SamplingDefaults:
    """Official pipeline defaults of a checkpoint (`wan22.md` section 1.2).

    `guide_scale` is (low-noise expert, high-noise expert), the official order; single-expert models
    use the same value twice. `boundary` is the fraction of the 1000 training timesteps at and above
    which the high-noise expert runs (None for single-expert models).
    """

    steps: int
    shift: float
    guide_scale: tuple[float, float]
    boundary: float | None
    frame_num: int
    fps: int
    size: tuple[int, int]  # (width, height)


@dataclasses.dataclass(frozen=True)
class ModelPreset:
    """A named model: its DiT, its experts, its VAE geometry and its sampling defaults.

    `experts` names the DiT weight sets: ("high_noise", "low_noise") for the A14B mixtures (the
    high-noise expert serves t >= boundary), ("dit",) otherwise.
    """

    name: str
    dit: DiTConfig
    experts: tuple[str, ...]
    vae_z_dim: int
    vae_stride: tuple[int, int, int]
    sampling: SamplingDefaults


_A14B = dict(dim=5120, ffn_dim=13824, num_heads=40, num_layers=40)

PRESETS: dict[str, ModelPreset] = {
    p.name: p
    for p in [
        ModelPreset(
            name="wan2.2-i2v-a14b",
            dit=DiTConfig(**_A14B, in_dim=36, out_dim=16, model_type="i2v"),
            experts=("high_noise", "low_noise"),
            vae_z_dim=16,
            vae_stride=(4, 8, 8),
            sampling=SamplingDefaults(
                steps=40,
                shift=5.0,
                guide_scale=(3.5, 3.5),
                boundary=0.900,
                frame_num=81,
                fps=16,
                size=(1280, 720),
            ),
        ),
        ModelPreset(
            name="wan2.2-t2v-a14b",
            dit=DiTConfig(**_A14B, in_dim=16, out_dim=16, model_type="t2v"),
            experts=("high_noise", "low_noise"),
            vae_z_dim=16,
            vae_stride=(4, 8, 8),
            sampling=SamplingDefaults(
                steps=40,
                shift=12.0,
                guide_scale=(3.0, 4.0),
                boundary=0.875,
                frame_num=81,
                fps=16,
                size=(1280, 720),
            ),
        ),
        ModelPreset(
            name="wan2.2-ti2v-5b",
            dit=DiTConfig(
                dim=3072, ffn_dim=14336, num_heads=24, num_layers=30, in_dim=48, out_dim=48, model_type="ti2v"
            ),
            experts=("dit",),
            vae_z_dim=48,
            vae_stride=(4, 16, 16),
            sampling=SamplingDefaults(
                steps=50,
                shift=5.0,
                guide_scale=(5.0, 5.0),
                boundary=None,
                frame_num=121,
                fps=24,
                size=(1280, 704),
            ),
        ),
        ModelPreset(
            name="wan2.1-t2v-1.3b",
            dit=DiTConfig(
                dim=1536, ffn_dim=8960, num_heads=12, num_layers=30, in_dim=16, out_dim=16, model_type="t2v"
            ),
            experts=("dit",),
            vae_z_dim=16,
            vae_stride=(4, 8, 8),
            sampling=SamplingDefaults(
                steps=50,
                shift=5.0,
                guide_scale=(5.0, 5.0),
                boundary=None,
                frame_num=81,
                fps=16,
                size=(832, 480),
            ),
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
            vae_z_dim=16,
            vae_stride=(4, 8, 8),
            sampling=SamplingDefaults(
                steps=8, shift=5.0, guide_scale=(5.0, 5.0), boundary=None, frame_num=9, fps=8, size=(64, 48)
            ),
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
            vae_z_dim=16,
            vae_stride=(4, 8, 8),
            sampling=SamplingDefaults(
                steps=8, shift=5.0, guide_scale=(3.5, 3.5), boundary=0.900, frame_num=9, fps=8, size=(64, 48)
            ),
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
            vae_z_dim=48,
            vae_stride=(4, 16, 16),
            sampling=SamplingDefaults(
                steps=8, shift=5.0, guide_scale=(5.0, 5.0), boundary=None, frame_num=9, fps=8, size=(64, 64)
            ),
        ),
    ]
}


def get_preset(name: str) -> ModelPreset:
    """Returns the preset called `name`; raises ValueError listing the known names otherwise."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown model preset {name!r}; known presets: {', '.join(PRESETS)}") from None
