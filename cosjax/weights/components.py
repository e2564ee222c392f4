"""Finding and opening the PyTorch VAE and umT5 encoder of a Wan repo (headers or memory maps only).

VAE: a Diffusers `vae/` folder (config.json + safetensors, sharded or not) or an official
`Wan2.x_VAE.pth`, whose architecture is a VAE preset told by its latent width (`vae_keys`).
umT5: a Diffusers `text_encoder/` (config.json + safetensors) or the official
`models_t5_umt5-xxl-enc-bf16.pth` (architecture `UMT5_XXL` unless given), with its tokenizer folder.
Every source is checked (keys, shapes, dtypes) when opened; `leaves()` then streams it.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path

import ml_dtypes
import numpy as np

from cosjax import tokenizer as tokenizer_lib
from cosjax.configs import DiTConfig, VAEConfig
from cosjax.models.t5 import UMT5_XXL, T5Config
from cosjax.weights import names, t5_keys, vae_keys
from cosjax.weights.keymap import Layout
from cosjax.weights.tensors import CheckpointError, index_tensors, read_header, read_json, read_torch_state

_VAE_TORCH_SUFFIXES = (".pth", ".pt")
_T5_DTYPES = (np.dtype(np.float32), np.dtype(ml_dtypes.bfloat16), np.dtype(np.float16))


@dataclasses.dataclass
class VAESource:
    """A checked VAE (tensor headers or a memory map only, no data read).

    Attributes:
      location: the Diffusers `vae/` folder (or file) or the official `.pth` file.
      layout: "diffusers" or "official" key names.
      config: the architecture.
      entries: key -> tensor entry.
    """

    location: Path
    layout: Layout
    config: VAEConfig
    entries: dict

    def leaves(self, allow_nonfinite: bool = False) -> Iterator[tuple[tuple[str, ...], np.ndarray]]:
        """(path, float32 leaf) in our layout, one at a time, each source tensor checked finite."""
        km = vae_keys.key_map(self.config)
        plan = km.check_entries(self.layout, self.entries, self.location)
        yield from km.iter_leaves(plan, self.entries, np.dtype(np.float32), allow_nonfinite)


@dataclasses.dataclass
class TextEncoderSource:
    """A checked umT5 encoder, with its tokenizer folder when found in a repo.

    Attributes:
      location: the Diffusers `text_encoder/` folder (or a safetensors file) or the official `.pth`.
      layout: "diffusers" or "official" key names.
      config: the architecture.
      tensors: key -> tensor entry.
      plan: per leaf, the key to read per layer (`KeyMap.check`).
      tokenizer: the folder holding `tokenizer.json` (checked readable), or None.
    """

    location: Path
    layout: Layout
    config: T5Config
    tensors: dict
    plan: list
    tokenizer: Path | None = None

    def leaves(
        self, dtype: np.dtype, allow_nonfinite: bool = False
    ) -> Iterator[tuple[tuple[str, ...], np.ndarray]]:
        """(path, leaf) in our layout and `dtype`, one leaf at a time (stacked leaves filled per layer)."""
        yield from t5_keys.key_map(self.config).iter_leaves(self.plan, self.tensors, dtype, allow_nonfinite)

    def stored_dtype(self) -> np.dtype:
        """The dtype of the token embedding as stored (bfloat16 in the official and Diffusers repos)."""
        return self.tensors[self.plan[0][1][0]].dtype


# ----------------------------------------------------------------------------------------------
# VAE


def official_vae_file(path: Path) -> Path | None:
    """The official checkpoint `path` names: itself if a `.pth` file, or the single `*VAE.pth` in a
    folder that holds no Diffusers VAE weights; None otherwise."""
    if path.suffix in _VAE_TORCH_SUFFIXES:
        return path
    diffusers = [path / names.VAE_DIR, path / names.DIFFUSERS_WEIGHTS_FILE, path / names.DIFFUSERS_INDEX_FILE]
    if not path.is_dir() or any(p.exists() for p in diffusers):
        return None
    found = sorted(path.glob(names.OFFICIAL_VAE_GLOB))
    return found[0] if len(found) == 1 else None


def _diffusers_vae_files(folder_or_file: Path) -> tuple[Path, list[Path]]:
    """-> (the folder holding config.json, the safetensors files)."""
    if folder_or_file.is_file():
        return folder_or_file.parent, [folder_or_file]
    if not folder_or_file.is_dir():
        raise CheckpointError(f"{folder_or_file}: no such file or folder")
    folder = folder_or_file / names.VAE_DIR if (folder_or_file / names.VAE_DIR).is_dir() else folder_or_file
    weights, index = folder / names.DIFFUSERS_WEIGHTS_FILE, folder / names.DIFFUSERS_INDEX_FILE
    if weights.is_file():
        return folder, [weights]
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise CheckpointError(f"{index}: corrupt index ({e})") from None
        return folder, [folder / name for name in sorted(set(weight_map.values()))]
    raise CheckpointError(f"{folder}: neither {weights.name} nor {index.name} found")


def vae_config_from_json(folder: Path) -> VAEConfig:
    """VAEConfig from a Diffusers `AutoencoderKLWan` config.json in `folder`."""
    path = folder / "config.json"
    if not path.is_file():
        raise CheckpointError(f"{path}: not found (pass config= to load weights without one)")
    raw = read_json(path)
    if raw.get("_class_name", "AutoencoderKLWan") != "AutoencoderKLWan":
        raise CheckpointError(f"{path}: describes a {raw['_class_name']}, not an AutoencoderKLWan")
    try:
        return VAEConfig.from_diffusers(raw)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: unsupported VAE config ({e})") from None


def open_vae(path: str | Path, config: VAEConfig | None = None) -> VAESource:
    """Indexes and checks a Wan VAE in either layout, without converting any tensor.

    Safetensors are read as headers only; an official `.pth` is memory-mapped (`read_torch_state`).

    Args:
      path: an official `.pth` (or a folder holding exactly one `*VAE.pth` and no Diffusers VAE
        weights), or the Diffusers layout (a pipeline folder with `vae/`, the VAE folder, or its file).
      config: the architecture; None reads config.json (Diffusers) or tells the preset by z_dim (official).

    Raises:
      CheckpointError naming the file and key for a missing, corrupt or non-state-dict file, an unknown
      z_dim, a missing / unsupported config, and missing, unexpected, mis-shaped or non-float tensors.
    """
    path = Path(path)
    official = official_vae_file(path)
    return open_official_vae(official, config) if official is not None else open_diffusers_vae(path, config)


def open_official_vae(file: Path, config: VAEConfig | None = None) -> VAESource:
    """`open_vae` of an official `.pth` state dict (config None: the VAE preset of its latent width)."""
    entries: dict = read_torch_state(file)
    config = config or vae_keys.official_config(entries, file)
    vae_keys.check_keys(config, entries, file, layout="official")
    return VAESource(Path(file), "official", config, entries)


def open_diffusers_vae(path: Path, config: VAEConfig | None = None) -> VAESource:
    """`open_vae` of the Diffusers layout (config None: the config.json beside the weights)."""
    folder, files = _diffusers_vae_files(Path(path))
    config = config or vae_config_from_json(folder)
    entries: dict = {}
    for file in files:
        entries.update(read_header(file))
    vae_keys.check_keys(config, entries, path, layout="diffusers")
    return VAESource(Path(path), "diffusers", config, entries)


# ----------------------------------------------------------------------------------------------
# umT5 encoder


def t5_config_from_json(raw: dict, where: object) -> T5Config:
    """T5Config from a transformers `UMT5EncoderModel` config.json."""
    model_type = raw.get("model_type", "umt5")
    if model_type != "umt5":
        raise CheckpointError(
            f"{where}: model_type {model_type!r}; only umT5 (a bias table per layer) is supported"
        )
    if raw.get("feed_forward_proj", "gated-gelu") != "gated-gelu" or raw.get("is_decoder"):
        raise CheckpointError(
            f"{where}: only a umT5 encoder with feed_forward_proj 'gated-gelu' is supported, got "
            f"feed_forward_proj {raw.get('feed_forward_proj')!r}, is_decoder {raw.get('is_decoder')!r}"
        )
    try:
        return T5Config(
            vocab_size=raw["vocab_size"],
            d_model=raw["d_model"],
            d_kv=raw["d_kv"],
            num_heads=raw["num_heads"],
            d_ff=raw["d_ff"],
            num_layers=raw["num_layers"],
            num_buckets=raw.get("relative_attention_num_buckets", 32),
            max_distance=raw.get("relative_attention_max_distance", 128),
            eps=raw.get("layer_norm_epsilon", 1e-6),
        )
    except KeyError as e:
        raise CheckpointError(f"{where}: config lacks field {e}") from None


def open_t5(path: str | Path, config: T5Config | None = None) -> TextEncoderSource:
    """Indexes and checks a umT5 checkpoint: every key, shape and dtype (no weight data read).

    Args:
      path: a `.pth` state dict (memory-mapped); a `.safetensors` file; a folder of safetensors (with
        an index when sharded); or a Diffusers repo holding `text_encoder/`.
      config: architecture override. Otherwise `config.json` next to the safetensors, else (and
        always for `.pth` files, whose folder's config.json belongs to the DiT) `UMT5_XXL`.

    Raises:
      CheckpointError naming the key and file of any missing, unexpected, mis-shaped or
      non-floating-point tensor.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such file or folder")
    if path.is_dir() and (path / names.DIFFUSERS_T5_WEIGHTS).is_dir():
        path = path / names.DIFFUSERS_T5_WEIGHTS
    if path.is_file() and path.suffix in names.TORCH_SUFFIXES:
        tensors: dict = read_torch_state(path)
        config_file = None
    else:
        tensors = index_tensors(path)
        config_file = (path if path.is_dir() else path.parent) / "config.json"
    if config is None and config_file is not None and config_file.is_file():
        config = t5_config_from_json(read_json(config_file), config_file)
    config = config or UMT5_XXL
    layout = t5_keys.detect_layout(tensors, path)
    plan = t5_keys.key_map(config).check_entries(layout, tensors, path)
    for key, entry in tensors.items():
        if entry.dtype not in _T5_DTYPES:
            raise CheckpointError(f"{entry.file}: tensor {key!r} has dtype {entry.dtype}, not a float dtype")
    return TextEncoderSource(path, layout, config, tensors, plan)


# ----------------------------------------------------------------------------------------------
# A repo's components besides the DiT


@dataclasses.dataclass
class Components:
    """What a repo holds besides the DiT: each component found (or None), and why others are skipped."""

    vae: VAESource | None = None
    text_encoder: TextEncoderSource | None = None
    skipped: dict[str, str] = dataclasses.field(default_factory=dict)


def find_components(
    src: str | Path, dit: DiTConfig, vae: bool = True, text_encoder: bool = True
) -> Components:
    """Detects and checks the VAE and umT5 encoder of a repo folder, before anything is written.

    Looked for at the top level of `src`: a Diffusers `vae/` or an official `*VAE.pth`
    (`Wan2.1_VAE.pth`, `Wan2.2_VAE.pth`); a Diffusers `text_encoder/` + `tokenizer/` or the official
    `models_t5_umt5-xxl-enc-bf16.pth` + `google/umt5-xxl/`. A file or a bare model folder holds none.

    Args:
      src: the source of `convert_checkpoint`.
      dit: its DiT's architecture (the VAE's z_dim must be its out_dim, the encoder's d_model its
        text_dim).
      vae, text_encoder: False skips that component without looking for it.

    Raises:
      CheckpointError naming the file when a component is present but unusable: missing, unexpected,
      mis-shaped or non-float tensors, a corrupt file, a missing or unreadable tokenizer.json, or an
      architecture that does not fit the DiT.
    """
    src, found = Path(src), Components()
    if vae:
        found.vae = _find_vae(src, dit)
    if text_encoder:
        found.text_encoder = _find_text_encoder(src, dit)
    for name, wanted, got in (("vae", vae, found.vae), ("text_encoder", text_encoder, found.text_encoder)):
        if got is None:
            found.skipped[name] = "not found in the source" if wanted else "not requested"
    return found


def _find_vae(src: Path, dit: DiTConfig) -> VAESource | None:
    if not src.is_dir():
        return None
    if (src / names.VAE_DIR).is_dir():
        location = src / names.VAE_DIR
    else:
        files = sorted(src.glob(names.OFFICIAL_VAE_GLOB))
        if not files:
            return None
        if len(files) > 1:
            raise CheckpointError(
                f"{src}: several VAE files ({', '.join(f.name for f in files)}); keep one, or pass "
                "vae=False (--no-vae)"
            )
        location = files[0]
    source = open_vae(location)
    if source.config.z_dim != dit.out_dim:
        raise CheckpointError(
            f"{location}: the VAE has z_dim {source.config.z_dim}, but the DiT's latents have {dit.out_dim} "
            "channels"
        )
    return source


def _find_text_encoder(src: Path, dit: DiTConfig) -> TextEncoderSource | None:
    if not src.is_dir():
        return None
    candidates = (names.OFFICIAL_T5_WEIGHTS, names.DIFFUSERS_T5_WEIGHTS)
    weights = next((src / n for n in candidates if (src / n).exists()), None)
    if weights is None:
        return None
    source = open_t5(weights)
    if source.config.d_model != dit.text_dim:
        raise CheckpointError(
            f"{weights}: the umT5 encoder has d_model {source.config.d_model}, but the DiT takes text_dim "
            f"{dit.text_dim}"
        )
    return dataclasses.replace(source, location=weights, tokenizer=_check_tokenizer(src, weights))


def _check_tokenizer(src: Path, weights: Path) -> Path:
    """The repo's tokenizer folder, its tokenizer.json checked readable by `UMT5Tokenizer`."""
    folder = next((src / n for n in names.TOKENIZER_DIRS if (src / n).is_dir()), None)
    if folder is None:
        raise CheckpointError(
            f"{src}: {weights.name} has no tokenizer beside it (looked for "
            f"{', '.join(names.TOKENIZER_DIRS)}); "
            "pass text_encoder=False (--no-text-encoder) to convert without the text encoder"
        )
    if not (folder / "tokenizer.json").is_file():
        raise CheckpointError(
            f"{folder / 'tokenizer.json'}: not found (the text encoder's tokenizer); pass "
            "text_encoder=False (--no-text-encoder) to convert without the text encoder"
        )
    try:
        tokenizer_lib.UMT5Tokenizer.from_dir(folder)
    except ValueError as e:  # unreadable file, no <pad>, no </s> appended: the message names the file
        raise CheckpointError(str(e)) from None
    return folder
