"""Finding and opening PyTorch Wan DiT checkpoints in the official or Diffusers layout.

Recognised inputs (the layout is detected, never asked for):
  * a Diffusers repo: `transformer/` (+ `transformer_2/` for A14B: high- then low-noise expert);
  * an official A14B repo: `high_noise_model/` and `low_noise_model/`;
  * one model folder: `config.json` + sharded safetensors with a `*.safetensors.index.json`, or
    unsharded safetensors, in either key layout;
  * a single `.safetensors` file, optionally with the `model.diffusion_model.` key prefix.
The layout of a model is told by its probe key (`dit_keys.PROBES`); a mixture's boundary is the
repo's `model_index.json` `boundary_ratio`, else its preset's (`configs.mixture_boundary`).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np

from cosjax.configs import PRESETS, DiTConfig, mixture_boundary
from cosjax.weights import names
from cosjax.weights.dit_keys import PROBES, SHAPE_KEYS, key_map
from cosjax.weights.keymap import Layout
from cosjax.weights.tensors import TORCH_FIX, CheckpointError, Entry, index_tensors, read_json

log = logging.getLogger(__name__)


@dataclasses.dataclass
class ExpertSource:
    """One DiT's weights on disk.

    Attributes:
      name: "dit", or "high_noise" / "low_noise" for the experts of an A14B mixture.
      location: the folder or file it was read from.
      layout: "official" or "diffusers" key names.
      config: the architecture, from config.json, a preset, or inferred from tensor shapes.
      tensors: key (prefix removed) -> where its bytes are (`tensors.Entry`).
    """

    name: str
    location: Path
    layout: Layout
    config: DiTConfig
    tensors: dict[str, Entry]

    def check(self) -> list:
        """Every key, shape and dtype checked against `config` (no data read); returns the read plan."""
        return key_map(self.config).check_entries(self.layout, self.tensors, self.location)

    def leaves(
        self, dtype: np.dtype, allow_nonfinite: bool = False
    ) -> Iterator[tuple[tuple[str, ...], np.ndarray]]:
        """(path, leaf) of our tree in `dtype`, one leaf at a time (`KeyMap.iter_leaves`), after `check`."""
        yield from key_map(self.config).iter_leaves(self.check(), self.tensors, dtype, allow_nonfinite)


@dataclasses.dataclass
class CheckpointSource:
    """A checkpoint: one or two experts and, for mixtures, the high-noise boundary (t/1000)."""

    experts: list[ExpertSource]
    boundary: float | None

    @property
    def high_noise_expert(self) -> str | None:
        names = [e.name for e in self.experts]
        return "high_noise" if "high_noise" in names else None


def open_checkpoint(path: str | Path, config: DiTConfig | None = None) -> CheckpointSource:
    """Detects the layout of `path` and indexes every tensor (headers only, no data read).

    Args:
      path: a repo folder, a model folder or a .safetensors file (see the module docstring).
      config: architecture to use instead of config.json / shape inference (e.g. a preset's).

    Raises:
      CheckpointError with the offending path when nothing recognisable is found, a shard is
      missing, truncated or corrupt, or an index disagrees with its shards.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such file or folder")
    if path.is_file():
        return CheckpointSource([_open_model(path, "dit", config)], None)
    first, second = names.DIFFUSERS_EXPERTS
    if (path / first).is_dir():
        if not (path / second).is_dir():
            return CheckpointSource([_open_model(path / first, "dit", config)], None)
        experts = [
            _open_model(path / n, e, config)
            for n, e in zip(names.DIFFUSERS_EXPERTS, ("high_noise", "low_noise"), strict=True)
        ]
        boundary = read_json(path / names.MODEL_INDEX).get("boundary_ratio")
        return CheckpointSource(
            experts, mixture_boundary(experts[0].config) if boundary is None else boundary
        )
    if any((path / sub).is_dir() for sub in names.OFFICIAL_EXPERTS):
        for sub in names.OFFICIAL_EXPERTS:
            if not (path / sub).is_dir():
                raise CheckpointError(f"{path}: has one A14B expert folder but {sub}/ is missing")
        experts = [
            _open_model(path / sub, e, config)
            for sub, e in zip(names.OFFICIAL_EXPERTS, ("high_noise", "low_noise"), strict=True)
        ]
        return CheckpointSource(experts, mixture_boundary(experts[0].config))
    if list(path.glob("*.safetensors")) or list(path.glob("*.safetensors.index.json")):
        return CheckpointSource([_open_model(path, "dit", config)], None)
    pickles = sorted(p.name for suffix in names.TORCH_SUFFIXES for p in path.glob(f"*{suffix}"))
    if pickles:
        raise CheckpointError(f"{path}: holds only PyTorch pickle files ({', '.join(pickles)}); {TORCH_FIX}")
    raise CheckpointError(
        f"{path}: no Wan DiT checkpoint found: expected transformer/ (Diffusers), high_noise_model/ "
        f"and low_noise_model/ (official A14B), or .safetensors files"
    )


def _open_model(location: Path, name: str, config: DiTConfig | None) -> ExpertSource:
    tensors = index_tensors(location)
    if any(k.startswith(names.SINGLE_FILE_PREFIX) for k in tensors):
        tensors = {k.removeprefix(names.SINGLE_FILE_PREFIX): v for k, v in tensors.items()}
    layout = next((layout for layout, probe in PROBES.items() if probe in tensors), None)
    if layout is None:
        files = sorted({e.file.name for e in tensors.values()})
        probes = " nor ".join(f"{probe!r} ({layout})" for layout, probe in PROBES.items())
        raise CheckpointError(
            f"{location}: not a Wan DiT checkpoint in a known layout: {', '.join(files)} hold neither "
            f"{probes}"
        )
    folder = location if location.is_dir() else location.parent
    if config is None:
        raw = read_json(folder / "config.json")
        config = config_from_json(raw, folder / "config.json") if raw else infer_config(tensors, layout)
    return ExpertSource(name, location, layout, config, tensors)


def config_from_json(raw: dict, where: Path) -> DiTConfig:
    """DiTConfig from an official (`WanModel`) or Diffusers (`WanTransformer3DModel`) config.json.

    Raises:
      CheckpointError naming `where` and the field when one is missing or of the wrong type (e.g.
      "dim": "48"), with the fix.
    """
    if not isinstance(raw, dict):
        raise CheckpointError(
            f"{where}: not a JSON object; give the folder a model config.json or pass a preset (--preset)"
        )
    try:
        return _config_from_json(raw, where)
    except CheckpointError:
        raise
    except KeyError as e:
        raise CheckpointError(f"{where}: config lacks field {e}") from None
    except (TypeError, ValueError) as e:
        raise CheckpointError(
            f"{where}: {e}; fix that field of the config.json, or pass a preset (--preset) to take the "
            "architecture from it instead"
        ) from None


def _config_from_json(raw: dict, where: Path) -> DiTConfig:
    if "num_attention_heads" in raw:  # Diffusers
        if raw.get("image_dim") or raw.get("added_kv_proj_dim"):
            raise CheckpointError(
                f"{where}: Wan2.1 I2V/FLF2V models with a CLIP image branch are not supported"
            )
        for name in ("num_attention_heads", "attention_head_dim"):  # multiplied below: checked first
            if isinstance(raw[name], bool) or not isinstance(raw[name], int):
                raise ValueError(f"field {name!r} must be an integer, got {raw[name]!r}")
        c_in, c_out = raw["in_channels"], raw["out_channels"]
        return DiTConfig(
            dim=raw["num_attention_heads"] * raw["attention_head_dim"],
            ffn_dim=raw["ffn_dim"],
            num_heads=raw["num_attention_heads"],
            num_layers=raw["num_layers"],
            in_dim=c_in,
            out_dim=c_out,
            model_type=_model_type(c_in, c_out),
            patch_size=_patch(raw),
            text_dim=raw.get("text_dim", 4096),
            freq_dim=raw.get("freq_dim", 256),
            eps=raw.get("eps", 1e-6),
        )
    model_type = raw.get("model_type") or _model_type(raw["in_dim"], raw["out_dim"])
    if model_type not in ("t2v", "i2v", "ti2v"):
        raise CheckpointError(f"{where}: model_type {model_type!r} is not supported (t2v, i2v, ti2v are)")
    return DiTConfig(
        dim=raw["dim"],
        ffn_dim=raw["ffn_dim"],
        num_heads=raw["num_heads"],
        num_layers=raw["num_layers"],
        in_dim=raw["in_dim"],
        out_dim=raw["out_dim"],
        model_type=model_type,
        patch_size=_patch(raw),
        text_len=raw.get("text_len", 512),
        text_dim=raw.get("text_dim", 4096),
        freq_dim=raw.get("freq_dim", 256),
        eps=raw.get("eps", 1e-6),
    )


def _patch(raw: dict) -> tuple:
    patch = raw.get("patch_size", (1, 2, 2))
    if not isinstance(patch, list | tuple):
        raise ValueError(f"DiTConfig field 'patch_size' must be 3 positive integers, got {patch!r}")
    return tuple(patch)


def _model_type(in_dim: int, out_dim: int) -> str:
    """The model type of a checkpoint that does not name one (Diffusers configs, bare files): that of
    the named preset with the same (in, out) channels; for channel counts no preset has, the I2V
    input rule (latents + 4 mask + latents of the first frame: in = 2 * out + 4), else t2v."""
    if not all(isinstance(v, int) for v in (in_dim, out_dim)):
        return "t2v"  # DiTConfig then names the field that is not an integer
    for preset in PRESETS.values():
        if (preset.dit.in_dim, preset.dit.out_dim) == (in_dim, out_dim):
            return preset.model_type
    return "i2v" if in_dim == 2 * out_dim + 4 else "t2v"


def infer_config(tensors: Mapping[str, Entry], layout: Layout) -> DiTConfig:
    """Architecture from tensor shapes alone (single files without config.json).

    The head count is not visible in the shapes; every Wan release uses head_dim 128, so
    num_heads = dim / 128 (pass a config to override).
    """
    names = SHAPE_KEYS[layout]
    try:
        dim, in_dim, *patch = tensors["patch_embedding.weight"].shape
        layers = {int(k.split(".")[1]) for k in tensors if k.startswith("blocks.")}
        ffn_dim = tensors[f"blocks.0.{names[0]}"].shape[0]
        text_dim = tensors[names[1]].shape[1]
        freq_dim = tensors[names[2]].shape[1]
        out_dim = tensors[names[3]].shape[0] // (patch[0] * patch[1] * patch[2])
    except (KeyError, ValueError) as e:
        raise CheckpointError(
            f"cannot infer the architecture from tensor shapes (missing {e}); "
            f"add a config.json or pass a preset"
        ) from None
    log.warning("no config.json: architecture inferred from shapes, assuming head_dim 128")
    return DiTConfig(
        dim=dim,
        ffn_dim=ffn_dim,
        num_heads=max(1, dim // 128),
        num_layers=max(layers) + 1,
        in_dim=in_dim,
        out_dim=out_dim,
        model_type=_model_type(in_dim, out_dim),
        patch_size=tuple(patch),
        text_dim=text_dim,
        freq_dim=freq_dim,
    )
