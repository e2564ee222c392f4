"""What an experiment studies: a model with its cases, conditioning, decoding and scoring.

An experiment (`experiments/`) is written once against `Subject`; two subjects implement it:

* `ToySubject`: the embedded toy model (or any toy model folder, `cosjax.toy.model_file`) on the synthetic
  task families of `cosjax.data` (data source "toy", "toy:maze,move", "toy:move@held_out").
  Cases are scored at once by the families' rule-based scorers.
* `PipelineSubject`: a converted Wan checkpoint (`Pipeline`) on a local VBVR-Bench folder (data
  source "vbvr-bench:PATH"). It has no per-case scorer (`score` returns None): experiments fall back
  on agreement with the clean run, and the `ensemble` experiment hands its videos to VBVR-EvalKit.

Case ids are file-safe strings ("move-in-00012", "In-Domain_50-G-3_x-00002").
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np

from cosjax.paths import user_path
from cosjax.sampling.sampler import Conditioning, Sampler, SamplerSettings
from cosjax.toy.model_file import EMBEDDED_MODEL

SPLITS = ("in_domain", "held_out")


@dataclasses.dataclass(frozen=True, eq=False)
class CaseRef:
    """One experiment input.

    Attributes:
      id: file-safe unique id.
      group: the task (toy family, or VBVR task folder) for per-task tables.
      split: "in_domain" or "held_out" (VBVR: In-Domain_50 / Out-of-Domain_50).
      category: toy: the family; VBVR: the EvalKit category (Abstraction, Knowledge, ...).
      source: the subject's own record (a `cosjax.data.case.Case` or a VBVR `BenchSample`).
    """

    id: str
    group: str
    split: str
    category: str
    source: Any


def parse_data(data: str) -> tuple[str, str]:
    """'toy', 'toy:SPEC' or 'vbvr-bench:PATH' -> (kind, argument)."""
    kind, _, arg = data.partition(":")
    if kind not in ("toy", "vbvr-bench"):
        raise ValueError(
            f"unknown data source {data!r}; use 'toy[:families[@held_out]]' or 'vbvr-bench:PATH'"
        )
    if kind == "vbvr-bench" and not arg:
        raise ValueError("vbvr-bench needs the folder: --data vbvr-bench:/path/to/VBVR-Bench-Data")
    return kind, arg


class ToySubject:
    """The toy model (pixel-derived latents, `cosjax.toy`) on the synthetic task families.

    Args:
      path: a toy model folder (`cosjax.toy.model_file`); None = the embedded model shipped in the package.
        It loads on the default device; `load(mesh)` places it on a mesh.
    """

    kind = "toy"
    fps = 4

    def __init__(self, path: str | Path | None = None):
        from cosjax.toy.model_file import load_toy

        self.path = user_path(path) if path is not None else EMBEDDED_MODEL
        self.dit, self.meta, self.table = load_toy(self.path)
        self.space = self.meta.get("space", "pixel")
        self.pool = int(self.meta.get("pool", 1))
        self.stride = int(self.meta.get("stride", 1))
        self.scale = float(self.meta.get("scale", 1.0))
        self.defaults = dict(self.meta["sampling"])
        self.mesh = None

    def load(self, mesh=None) -> None:
        """Places the (already loaded) experts on `mesh` (None: leave them where they are)."""
        from cosjax.sampling.build import place_experts

        if mesh is not None:
            self.dit = dataclasses.replace(self.dit, experts=place_experts(self.dit.experts, mesh))
        self.mesh = mesh

    @property
    def config(self):
        return self.dit.config

    @property
    def num_layers(self) -> int:
        return self.dit.config.num_layers

    def describe(self) -> dict:
        """JSON-able identity of the model (goes into run configs)."""
        return {"kind": self.kind, "path": str(self.path), "step": self.meta.get("step")}

    def settings(self, **overrides) -> SamplerSettings:
        """The recommended sampling settings of the model, with overrides (None = keep)."""
        s = dict(self.defaults, **{k: v for k, v in overrides.items() if v is not None})
        return SamplerSettings(
            steps=int(s["steps"]),
            shift=float(s["shift"]),
            guide_scale=s["guide_scale"],
            grid=s.get("grid", "diffsynth"),
            solver=s.get("solver", "euler"),
        )

    def sampler(self, **overrides) -> Sampler:
        """`build_sampler` of the toy DiT (its dtype, the platform's attention, the subject's mesh)."""
        from cosjax.sampling.build import build_sampler

        return build_sampler(self.dit, self.settings(**overrides), mesh=self.mesh)

    def memory_inputs(self, cases: Sequence[CaseRef], settings: SamplerSettings, batch: int = 1) -> dict:
        """`cosjax.memory.choose_mesh` keywords for a batch of `batch` cases: the toy's latents are
        [B, C, F', H', W'] already, so the planner sees that grid with stride 1."""
        cond = self.condition(cases[:1], settings)
        _, _, frames, height, width = cond.latent_shape
        return dict(
            config=self.config,
            num_experts=len(self.dit.experts),
            frames=frames,
            height=height,
            width=width,
            param_dtype=self.dit.dtype,
            compute_dtype=self.dit.dtype,
            cfg=self.cfg(settings),
            batch=batch,
            vae_stride=(1, 1, 1),
            solver=settings.solver,
            platform="cpu" if jax.default_backend() == "cpu" else "accelerator",
        )

    def cfg(self, settings: SamplerSettings) -> bool:
        return max(settings.guide_scale) != 1.0

    def cases(self, spec: str, per_group: int, seed0: int = 0) -> list[CaseRef]:
        """`per_group` seeded cases of each family named in `spec` ("" = all; "move,maze";
        "@held_out" suffix for the held-out variants; "@both" for in-domain then held-out)."""
        from cosjax.data.tasks import FAMILIES, generate

        names, _, split = spec.partition("@")
        families = [n for n in names.split(",") if n] or sorted(FAMILIES)
        splits = {"": ("in_domain",), "in_domain": ("in_domain",), "held_out": ("held_out",)}.get(
            split, SPLITS if split == "both" else None
        )
        if splits is None:
            raise ValueError(f"unknown split {split!r} in {spec!r}; use @in_domain, @held_out or @both")
        out = []
        for held in splits:
            for name in families:
                for i in range(per_group):
                    case = generate(name, seed0 + i, held == "held_out")
                    tag = "in" if held == "in_domain" else "out"
                    out.append(CaseRef(f"{name}-{tag}-{seed0 + i:05d}", name, held, name, case))
        return out

    def condition(self, cases: Sequence[CaseRef], settings: SamplerSettings) -> Conditioning:
        """A batch of cases -> Conditioning with latent_shape (B, 3, F', H', W') (see `encode_videos`)."""
        from cosjax.toy.codec import latent_frames, toy_conditioning

        first = np.stack([c.source.first_frame for c in cases])
        ids = np.asarray([c.source.prompt_id for c in cases])
        if ids.max() >= len(self.table):
            bad = sorted({c.source.family for c in cases if c.source.prompt_id >= len(self.table)})
            raise ValueError(
                f"the toy model {self.path} knows {len(self.table)} prompts, but {bad} use prompt id "
                f"{int(ids.max())}: it was not trained on these families (toy.json's data says which)"
            )
        frames = latent_frames(int(self.meta["video_shape"]["frames"]), self.stride)
        return toy_conditioning(first, self.table[ids], frames, cfg=self.cfg(settings), pool=self.pool)

    def alternative(self, case: CaseRef) -> CaseRef:
        """The input a latent swap takes hidden states from: for `move`, the same scene with the
        other rule's prompt (so a flip sends the square to the other rule's cell); otherwise the
        next seed's case of the same family and split."""
        from cosjax.data.prompts import MOVE_COLOUR, MOVE_MIRROR, prompt_id
        from cosjax.data.tasks import generate

        src = case.source
        if src.family == "move":
            other = MOVE_MIRROR if src.prompt == MOVE_COLOUR else MOVE_COLOUR
            rule = "mirror" if other == MOVE_MIRROR else "colour"
            rings = [(tuple(cell), colour) for cell, colour in src.solution["rings"]]
            start = tuple(src.solution["start"])
            target = (start[0], 3 - start[1]) if rule == "mirror" else rings[0][0]
            solution = dict(src.solution, rule=rule, target=list(target))
            alt = dataclasses.replace(src, prompt=other, prompt_id=prompt_id(other), solution=solution)
            return dataclasses.replace(case, id=case.id + "-alt", source=alt)
        nxt = generate(src.family, src.seed + 1, src.held_out)
        return dataclasses.replace(case, id=case.id + "-alt", source=nxt)

    def decode(self, latents, cases: Sequence[CaseRef]) -> np.ndarray:
        """float32 [B, 3, F', H', W'] latents -> uint8 videos [B, F, H, W, 3]."""
        from cosjax.toy.codec import decode_latents

        first = np.stack([c.source.first_frame for c in cases])
        return decode_latents(latents, first, self.space, self.pool, self.stride, self.scale)

    def score(self, case: CaseRef, video: np.ndarray) -> float | None:
        """The family's rule-based score in [0, 1] of a uint8 video [F, H, W, 3]."""
        from cosjax.data.tasks import score

        return float(score(case.source, video))

    def reference_video(self, case: CaseRef) -> np.ndarray | None:
        """The ground-truth video uint8 [F, H, W, 3]."""
        return case.source.video


def key_for(case: CaseRef, seed: int) -> jax.Array:
    """The sampling key of a case: fold_in(key(seed), crc32(case id)), stable across runs and batches."""
    import zlib

    return jax.random.fold_in(jax.random.key(seed), zlib.crc32(case.id.encode()) & 0x7FFFFFFF)
