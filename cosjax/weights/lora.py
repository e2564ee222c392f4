"""Merging DiffSynth-Studio LoRA files (VBVR-Wan2.2's release format) into the DiT experts.

What DiffSynth writes (modelscope/DiffSynth-Studio and the VBVR fork hlillemark/VBVR-Wan2.2, which
carries its own copy of the `diffsynth/` files named here):
  * `diffsynth/diffusion/training_module.py` `add_lora_to_model`: the LoRA is injected with
    `peft.inject_adapter_in_model(LoraConfig(r=rank, lora_alpha=rank, target_modules=...))`, adapter
    name "default". PEFT's scaling lora_alpha / r is therefore 1: the trained update is exactly B @ A.
    The LoRA parameters are upcast to the pipeline dtype, bfloat16 in the Wan training script
    (`examples/wanvideo/model_training/train.py`), so the files should hold bf16 tensors (not checked
    against the released files).
  * `diffsynth/diffusion/logger.py` (`ModelLogger.save_model`; `save_checkpoint` in the VBVR fork)
    saves only the trainable parameters (`export_trainable_state_dict`) as safetensors, with the prefix
    `--remove_prefix_in_ckpt` removed: "pipe.dit." (default in `diffsynth/diffusion/parsers.py`, also
    passed by VBVR's `scripts/wan2.2-I2V-14B_vbvr_dataset.sh`). No `alpha` tensor is saved.
  * Module names are those of DiffSynth's `WanModel` (`diffsynth/models/wan_video_dit.py`), which are
    the official Wan names: `blocks.{i}.{self_attn,cross_attn}.{q,k,v,o}`, `blocks.{i}.ffn.{0,2}`.
    VBVR trains with `--lora_target_modules q,k,v,o,ffn.0,ffn.2 --lora_rank 32`; PEFT matches a
    module whose name ends in "." + target, so both attentions are adapted: 10 Linear layers per block,
    400 pairs (800 tensors) per expert file for the 40-layer A14B experts.
  So a key reads `blocks.3.self_attn.q.lora_A.default.weight` ([rank, in]) with its partner
  `blocks.3.self_attn.q.lora_B.default.weight` ([out, rank]).

How DiffSynth applies a LoRA (`diffsynth/diffusion/base_pipeline.py` `BasePipeline.load_lora`,
`diffsynth/utils/lora/general.py` `GeneralLoRALoader`):
  * The file is read cast to the pipeline dtype (bf16 for VBVR's `eval_vbvr_bench.py`).
  * `get_name_dict`: the target module is the key without `lora_B` (or `lora_up`, the kohya naming with
    `lora_down` as A), without one segment after it when there is one (the adapter name, "default"),
    without a leading "diffusion_model." and without the final "weight".
  * Since commit 237d1787 (2026-03), a `<module>.alpha` tensor, if present, scales A by alpha / rank.
  * `fuse_lora_to_base_model`: W <- W + alpha * (B @ A), in the loader's dtype, for every module whose
    name matches; names that match nothing are silently skipped. `alpha` is the `load_lora(...,
    alpha=1)` argument, which we call `strength`; VBVR's `eval_vbvr_bench.py` passes
    `--lora_alpha` = 1.0 by default.
  * With VRAM management on (as in VBVR's evaluation, which passes offload settings), `load_lora`
    hot-loads instead: it keeps A * alpha and B and adds (x A^T) B^T to each Linear's output at run
    time in the computation dtype. That is the same linear map as the fused weight.

Here: the same targets and the same formula, W + strength * (B @ (A * alpha / rank)), with alpha / rank
taken as 1 when no alpha is stored, computed in float32 on the (float32) source weight and only then
cast to the stored dtype, so at least as accurate as either bf16 path of DiffSynth. Unlike DiffSynth,
every key must land on a Linear weight of the model (unknown names, wrong layers, wrong shapes,
unpaired halves are `CheckpointError`s), and Diffusers module names (`blocks.{i}.attn1.to_q`, ...)
are accepted too, mapped through `dit_keys.KEY_SPECS`.
"""

from __future__ import annotations

import dataclasses
import functools
import operator
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import ml_dtypes
import numpy as np

from cosjax.configs import DiTConfig
from cosjax.models.dit import abstract_params
from cosjax.weights.dit_keys import KEY_SPECS, torch_shape
from cosjax.weights.keymap import KeySpec
from cosjax.weights.sources import ExpertSource
from cosjax.weights.tensors import CheckpointError, TensorEntry, check_finite, read_header

EXPERTS = ("high_noise", "low_noise", "dit")
_PREFIX = "diffusion_model."
_PAIR_KEY = re.compile(r"(?P<module>.+)\.(?P<role>lora_A|lora_B|lora_down|lora_up)(?:\.[^.]+)?\.weight")
_ALPHA_KEY = re.compile(r"(?P<module>.+)\.alpha")
_ROLE = {"lora_A": "down", "lora_down": "down", "lora_B": "up", "lora_up": "up"}
_LAYER = re.compile(r"blocks\.(?P<layer>\d+)\.(?P<rest>.+)")


@dataclasses.dataclass(frozen=True)
class LoRAUpdate:
    """The low-rank update of one Linear weight W [out, in]: delta = B @ (A * alpha / rank).

    Attributes:
      target: official key of W, e.g. "blocks.3.self_attn.q.weight".
      spec: the KeySpec of W; layer: its block index (None for unstacked weights).
      down: A, [rank, in]; up: B, [out, rank] (any float dtype on disk).
      alpha: optional stored alpha, a scalar (kohya-style files; DiffSynth's own have none).
    """

    target: str
    spec: KeySpec
    layer: int | None
    down: TensorEntry
    up: TensorEntry
    alpha: TensorEntry | None

    def delta(self) -> np.ndarray:
        """B @ (A * alpha / rank) in float32, [out, in]."""
        down = self.down.read().astype(np.float32)
        if self.alpha is not None:
            down = down * (self.alpha.read().astype(np.float32).reshape(()) / np.float32(down.shape[0]))
        return self.up.read().astype(np.float32) @ down


@dataclasses.dataclass(frozen=True)
class LoRA:
    """One validated LoRA file and the strength it is merged with.

    Attributes:
      path: the safetensors file.
      strength: factor on every update (DiffSynth's `load_lora(alpha=...)`; VBVR uses 1.0).
      updates: official weight key -> its update.
    """

    path: Path
    strength: float
    updates: dict[str, LoRAUpdate]


def merge_weight(target: str, weight: np.ndarray, loras: Sequence[LoRA]) -> np.ndarray:
    """W + sum over `loras` of strength * delta, for the weight with official key `target`.

    Args:
      target: official key, e.g. "blocks.0.ffn.2.weight".
      weight: the source tensor W, [out, in], any float dtype (float32 in the official A14B files).

    Returns:
      A new float32 [out, in] array; W itself (as float32) when no LoRA touches `target`.
    """
    merged = np.array(weight, dtype=np.float32)
    for lora in loras:
        if target in lora.updates:
            delta = lora.updates[target].delta()
            delta *= np.float32(lora.strength)  # in place: at most W, the result and one delta live at once
            merged += delta
    return merged


@dataclasses.dataclass(frozen=True)
class MergedEntry:
    """Stands in for a weight's TensorEntry: `read()` gives it with the LoRAs merged (float32)."""

    base: TensorEntry
    target: str
    loras: tuple[LoRA, ...]

    @property
    def file(self) -> Path:
        return self.base.file

    @property
    def shape(self) -> tuple[int, ...]:
        return self.base.shape

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(np.float32)

    def read(self) -> np.ndarray:
        return merge_weight(self.target, self.base.read(), self.loras)


def with_loras(expert: ExpertSource, loras: Sequence[LoRA]) -> ExpertSource:
    """A copy of `expert` whose targeted weights are read merged, one tensor per `read()`.

    Nothing is read here; `ExpertSource.leaves` pulls each merged tensor as it fills a leaf.
    """
    if not loras:
        return expert
    tensors = dict(expert.tensors)
    for target in sorted({t for lora in loras for t in lora.updates}):
        update = next(lora.updates[target] for lora in loras if target in lora.updates)
        key = update.spec.key(expert.layout, update.layer)
        touching = tuple(lora for lora in loras if target in lora.updates)
        tensors[key] = MergedEntry(expert.tensors[key], target, touching)
    return dataclasses.replace(expert, tensors=tensors)


def open_loras(
    experts: Sequence[ExpertSource],
    loras: Mapping[str, Sequence[tuple[str | Path, float]]] | None,
    allow_nonfinite: bool = False,
) -> dict[str, tuple[LoRA, ...]]:
    """Reads and validates every LoRA file (headers only) for the expert it is given to.

    Args:
      experts: the checkpoint's experts ("dit", or "high_noise" and "low_noise").
      loras: expert name -> [(LoRA file, strength), ...].
      allow_nonfinite: keep LoRA tensors holding NaN or inf (see `read_lora`).

    Raises:
      ValueError when an expert name is not one of the checkpoint's; CheckpointError (see
      `read_lora`) when a file does not fit its expert.
    """
    by_name = {e.name: e for e in experts}
    opened = {}
    for name, files in (loras or {}).items():
        if name not in by_name:
            raise ValueError(
                f"LoRA given for expert {name!r}, but this checkpoint's experts are "
                f"{', '.join(by_name)} (LoRA experts: {', '.join(EXPERTS)})"
            )
        opened[name] = tuple(
            read_lora(path, by_name[name].config, strength, allow_nonfinite) for path, strength in files
        )
    return {name: files for name, files in opened.items() if files}


def lora_metadata(opened: Mapping[str, Sequence[LoRA]]) -> dict[str, list[dict]]:
    """What goes in `cosjax_dit.json`: expert -> [{"path", "strength", "weights"}, ...]."""
    return {
        name: [
            {"path": str(lora.path.resolve()), "strength": lora.strength, "weights": len(lora.updates)}
            for lora in loras
        ]
        for name, loras in opened.items()
    }


@dataclasses.dataclass(frozen=True)
class Target:
    """A Linear weight a LoRA may change: its KeySpec, block index (None if unstacked), [out, in]."""

    spec: KeySpec
    layer: int | None
    shape: tuple[int, int]


@functools.lru_cache(maxsize=4)
def linear_targets(config: DiTConfig) -> dict[str, Target]:
    """Module name (official and Diffusers, e.g. "blocks.0.self_attn.q") -> every Linear of `config`."""
    params = abstract_params(config)
    targets = {}
    for spec in KEY_SPECS:
        if spec.transform != "linear":
            continue
        shape = torch_shape(spec, functools.reduce(operator.getitem, spec.path, params).shape, config)
        for layer in range(config.num_layers) if spec.stacked else [None]:
            for layout in ("official", "diffusers"):
                targets[spec.key(layout, layer).removesuffix(".weight")] = Target(spec, layer, shape)
    return targets


def read_lora(
    path: str | Path, config: DiTConfig, strength: float = 1.0, allow_nonfinite: bool = False
) -> LoRA:
    """Reads a LoRA file's header, checks that every key fits a Linear weight of `config`, then reads
    every tensor once (one at a time: LoRAs are small) to check it is finite, unless `allow_nonfinite`,
    and `strength` too, so that a damaged LoRA is refused before anything is written.

    Accepted keys (after an optional "diffusion_model." prefix): `<module>.lora_A[.<adapter>].weight`
    with `<module>.lora_B[.<adapter>].weight`, or `lora_down` / `lora_up`, and optionally
    `<module>.alpha`; `<module>` is an official or Diffusers Linear name, e.g. `blocks.0.self_attn.q`.

    Raises:
      CheckpointError naming the key and the file for: a key of another kind, an unpaired A or B, a
      module that is not a Linear layer of the DiT, a layer index beyond `config.num_layers`, a shape
      that does not give the weight's [out, in], a non-float tensor, or a file with no LoRA at all;
      `NonFiniteError` (a CheckpointError) naming the key and the file for a NaN or inf.
    """
    path = Path(path)
    if not allow_nonfinite and not np.isfinite(strength):
        raise CheckpointError(f"{path}: LoRA strength {strength} is not a finite number")
    header = read_header(path)
    groups = _group_keys(path, header)
    if not groups:
        raise CheckpointError(f"{path}: holds no LoRA weights")
    targets = linear_targets(config)
    updates: dict[str, LoRAUpdate] = {}
    for module, parts in groups.items():
        update = _resolve(path, module, parts, targets, config)
        if update.target in updates:
            raise CheckpointError(f"{path}: two LoRAs for {update.target!r} (one via {module!r})")
        updates[update.target] = update
    if not allow_nonfinite:
        for key, entry in header.items():
            check_finite(entry.read(), key, path)
    return LoRA(path, float(strength), updates)


def _group_keys(path: Path, header: Mapping[str, TensorEntry]) -> dict[str, dict]:
    """module -> {"down" | "up" | "alpha": (key, entry)}; refuses keys that are not LoRA parts."""
    groups: dict[str, dict] = {}
    for key, entry in header.items():
        name = key.removeprefix(_PREFIX)
        if match := _PAIR_KEY.fullmatch(name):
            module, role = match["module"], _ROLE[match["role"]]
        elif match := _ALPHA_KEY.fullmatch(name):
            module, role = match["module"], "alpha"
        else:
            raise CheckpointError(
                f"{path}: {key!r} is not a LoRA tensor (expected <module>.lora_A[.<adapter>].weight, "
                f"lora_B, lora_down, lora_up or <module>.alpha)"
            )
        if entry.dtype.kind != "f" and entry.dtype != ml_dtypes.bfloat16:
            raise CheckpointError(f"{path}: LoRA tensor {key!r} has dtype {entry.dtype}, not float")
        parts = groups.setdefault(module, {})
        if role in parts:
            raise CheckpointError(f"{path}: LoRA keys {parts[role][0]!r} and {key!r} are both {role} parts")
        parts[role] = (key, entry)
    return groups


def _resolve(
    path: Path, module: str, parts: dict, targets: Mapping[str, Target], config: DiTConfig
) -> LoRAUpdate:
    """Checks one module's LoRA parts against the model and returns its update."""
    key = next(iter(parts.values()))[0]
    for role, partner in (("down", "up"), ("up", "down")):
        if role in parts and partner not in parts:
            raise CheckpointError(f"{path}: LoRA key {parts[role][0]!r} has no matching {partner} (B/A) key")
    if "down" not in parts:
        raise CheckpointError(f"{path}: LoRA key {key!r} (alpha) has no lora_A/lora_B pair")
    if module not in targets:
        raise CheckpointError(f"{path}: LoRA key {key!r} {_why_unknown(module, targets, config)}")
    target = targets[module]
    _check_shapes(path, module, parts, target.shape, config)
    alpha = parts.get("alpha")
    return LoRAUpdate(
        target.spec.key("official", target.layer),
        target.spec,
        target.layer,
        parts["down"][1],
        parts["up"][1],
        None if alpha is None else alpha[1],
    )


def _check_shapes(path: Path, module: str, parts: dict, want: tuple[int, int], config: DiTConfig) -> None:
    """A [rank, in] and B [out, rank] must give the weight's [out, in]; a stored alpha is a scalar."""
    (down_key, down), (up_key, up) = parts["down"], parts["up"]
    if len(down.shape) != 2 or len(up.shape) != 2 or up.shape[1] != down.shape[0]:
        raise CheckpointError(
            f"{path}: LoRA keys {up_key!r} {up.shape} and {down_key!r} {down.shape} are not a "
            f"[out, rank] @ [rank, in] pair"
        )
    if (up.shape[0], down.shape[1]) != want:
        raise CheckpointError(
            f"{path}: LoRA keys {up_key!r} / {down_key!r} give an update of shape "
            f"{(up.shape[0], down.shape[1])}, but {module}.weight has shape {want} for dim={config.dim}, "
            f"ffn_dim={config.ffn_dim}"
        )
    if "alpha" in parts and int(np.prod(parts["alpha"][1].shape)) != 1:
        alpha_key, alpha = parts["alpha"]
        raise CheckpointError(f"{path}: LoRA key {alpha_key!r} has shape {alpha.shape}, not a scalar")


def _why_unknown(module: str, targets: Mapping[str, object], config: DiTConfig) -> str:
    match = _LAYER.fullmatch(module)
    if match and f"blocks.0.{match['rest']}" in targets:
        return (
            f"targets layer {match['layer']}, but the model has {config.num_layers} layers "
            f"(0..{config.num_layers - 1})"
        )
    return f"targets {module!r}, which is not a Linear layer of the Wan DiT"
