"""`PipelineSubject`: a converted Wan checkpoint on a local VBVR-Bench folder (see `cosjax.subjects`).

Each bench sample is generated at its ground truth's frame count and its first frame's size,
rounded as VBVR's reference pipeline does (`cosjax.data.vbvr_bench.generation_size`), one sample per
batch (sizes differ). There is no per-video scorer here: `score` returns None, experiments measure
agreement with the clean run, and the `ensemble` experiment scores its videos with VBVR-EvalKit.
The bench is listed by `cosjax.data.vbvr_bench.inspect_bench` (cross-checked against its
VBVR-Bench.json); samples it lists that are absent from the folder are never generated and count
as missing in the ensemble's scores.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import jax
import numpy as np

from cosjax.paths import user_path
from cosjax.sampling.sampler import Conditioning, Sampler, SamplerSettings
from cosjax.subjects import CaseRef, parse_data


def bench_cases(index, per_group: int | None) -> tuple[list[CaseRef], list]:
    """The first `per_group` listed samples (None = all) of every task, in bench order, as
    (cases for the samples on disk, `AbsentSample`s among those chosen).

    Absent samples take their place in the count, so the chosen set is the same whether or not
    some of it is missing. `index`: a `cosjax.data.vbvr_bench.BenchIndex`.
    """
    listed = sorted([*index.samples, *index.absent], key=lambda s: (s.split, s.task, s.index))
    cases, absent, taken, gone = [], [], {}, set(index.absent)
    for s in listed:
        n = taken.get((s.split, s.task), 0)
        if per_group is not None and n >= per_group:
            continue
        taken[(s.split, s.task)] = n + 1
        if s in gone:
            absent.append(s)
        else:
            split = "in_domain" if s.in_domain else "held_out"
            cases.append(CaseRef(f"{s.split}-{s.task}-{s.index}", s.task, split, s.category, s))
    return cases, absent


class PipelineSubject:
    """Args:
    model: a folder `cosjax convert` wrote from a whole repo (DiT experts, VAE, text encoder).
    data: "vbvr-bench:PATH".
    preset: sampling preset of `Pipeline.from_pretrained` ("vbvr" = 50 Euler steps, shift 5, CFG 5).

    The bench is scanned and the DiT's metadata read at once; the weights are loaded by `load(mesh)`
    (or on first use, on one device), so that `--mesh auto` can plan from the cases first.
    """

    kind = "pipeline"

    def __init__(self, model: str | Path, data: str = "", preset: str = "vbvr", **pipeline_kwargs):
        from cosjax.configs import get_sampling_preset
        from cosjax.data.vbvr_bench import inspect_bench
        from cosjax.pipeline import match_model, sampler_settings
        from cosjax.weights.loading import peek_dit

        kind, root = parse_data(data)
        if kind != "vbvr-bench":
            raise ValueError(f"a Wan checkpoint runs on --data vbvr-bench:PATH, got {data!r}")
        get_sampling_preset(preset)  # an unknown name fails before the bench is scanned
        self.bench_root = user_path(root)
        self.index = inspect_bench(self.bench_root)  # reports a malformed folder before any loading
        self.samples = self.index.samples
        self.path, self.preset, self.pipeline_kwargs = user_path(model), preset, pipeline_kwargs
        self._config, experts, self.dtype = peek_dit(self.path, pipeline_kwargs.get("dtype"))
        self.num_experts = len(experts)
        self.model = match_model(self._config, self.num_experts)
        self.defaults = sampler_settings(self.model, preset, self.num_experts)
        self.mesh, self._pipe = None, None

    def load(self, mesh=None) -> None:
        """Loads the pipeline (experts restored into their shardings on `mesh`; None: one device)."""
        from cosjax.pipeline import Pipeline

        pipe = Pipeline.from_pretrained(self.path, preset=self.preset, mesh=mesh, **self.pipeline_kwargs)
        if pipe.vae is None:
            raise ValueError(
                f"{self.path} has no VAE; experiments decode videos (pass a converted repo folder)"
            )
        self.mesh, self._pipe = mesh, pipe

    @property
    def fps(self) -> int:
        """The frame rate videos are written at: the model's (`ModelPreset.fps`)."""
        return self.model.fps

    @property
    def pipe(self):
        if self._pipe is None:
            self.load(self.mesh)
        return self._pipe

    @property
    def config(self):
        return self._config

    @property
    def num_layers(self) -> int:
        return self.config.num_layers

    def describe(self) -> dict:
        return {
            "kind": self.kind,
            "path": str(self.path),
            "preset": self.preset,
            "bench": str(self.bench_root),
        }

    def settings(self, **overrides) -> SamplerSettings:
        overrides = {k: v for k, v in overrides.items() if v is not None}
        return dataclasses.replace(self.defaults, **overrides)

    def sampler(self, **overrides) -> Sampler:
        """`build_sampler` of the loaded experts: the checkpoint's dtype, the platform's attention,
        the subject's mesh."""
        from cosjax.sampling.build import build_sampler

        return build_sampler(self.pipe.dit, self.settings(**overrides), mesh=self.mesh)

    def memory_inputs(self, cases: Sequence[CaseRef], settings: SamplerSettings) -> dict:
        """`cosjax.memory.choose_mesh` keywords for the largest of `cases` (one video per run)."""
        from cosjax.models.attention import default_backend

        frames, height, width = max((self.size(c) for c in cases), key=lambda s: s[0] * s[1] * s[2])
        return dict(
            config=self.config,
            num_experts=self.num_experts,
            frames=frames,
            height=height,
            width=width,
            param_dtype=self.dtype,
            compute_dtype=self.dtype,
            cfg=max(settings.guide_scale) != 1.0,
            attention="xla" if default_backend() == "xla" else "flash",
            vae_stride=self.model.vae_stride,
            solver=settings.solver,
            platform="cpu" if jax.default_backend() == "cpu" else "accelerator",
        )

    def cases(self, spec: str, per_group: int | None, seed0: int = 0) -> list[CaseRef]:
        """The first `per_group` listed samples (None = all) of every task, on disk (`bench_cases`)."""
        return bench_cases(self.index, per_group)[0]

    def size(self, case: CaseRef) -> tuple[int, int, int]:
        from cosjax.data.vbvr_bench import generation_size

        s = case.source
        return generation_size((s.height, s.width), s.gt_frames)

    def condition(self, cases: Sequence[CaseRef], settings: SamplerSettings) -> Conditioning:
        if len(cases) != 1:
            raise ValueError("VBVR-Bench samples are generated one at a time (their sizes differ)")
        import imageio.v3 as iio

        (case,) = cases
        frames, height, width = self.size(case)
        return self.pipe.condition(
            image=iio.imread(case.source.first_frame.read_bytes()),  # a local or a URL bench
            prompt=case.source.prompt,
            frames=frames,
            height=height,
            width=width,
            cfg=max(settings.guide_scale) != 1.0,
        )

    def alternative(self, case: CaseRef) -> CaseRef:
        """The next sample of the same task with the same generation size (for latent swaps)."""
        mine = [c for c in self.cases("", None) if c.group == case.group and c.split == case.split]
        order = [c.id for c in mine]
        start = order.index(case.id)
        for c in mine[start + 1 :] + mine[:start]:
            if self.size(c) == self.size(case):
                return c
        raise ValueError(f"task {case.group} has no other sample of size {self.size(case)} to swap with")

    def decode(self, latents, cases: Sequence[CaseRef]) -> np.ndarray:
        """Latents [B, C, T, H, W] -> uint8 videos [B, F, H, W, 3] through the VAE."""
        video = np.asarray(self.pipe.decode(latents), np.float32)  # [B, 3, F, H, W] in [-1, 1]
        return self.pipe.video_uint8(video).transpose(0, 2, 3, 4, 1)  # the preset's quantisation

    def score(self, case: CaseRef, video: np.ndarray) -> float | None:
        return None

    def write_output(self, root: Path, case: CaseRef, video: np.ndarray) -> Path:
        """Writes a generated video where VBVR-EvalKit looks for it (`root` is the 'model' folder)."""
        from cosjax.data.vbvr_bench import video_path
        from cosjax.outputs import VIDEO_QUALITY, write_mp4

        return write_mp4(video_path(root, case.source), video, fps=self.fps, quality=VIDEO_QUALITY["vbvr"])

    def evaluate_arms(self, setup, config, rows: list[dict]) -> dict:
        """Scores the run's videos with VBVR-EvalKit (`score_bench_run`; only process 0 scores)."""
        if not setup.folder.owner:  # group leads write their cases; process 0 alone scores the run
            return {"scoring": {"status": "on process 0"}, "table": ""}
        python = getattr(config, "evalkit_python", None)
        return score_bench_run(setup.folder.out, self.index, config.cases, config.evalkit, python)


ARMS = ("plain", "ensemble")


def score_bench_run(out, index, per_group: int | None, evalkit, python: str | None = None) -> dict:
    """Scores `out/videos/{plain,ensemble}` with VBVR-EvalKit (`cosjax.evalkit.score_arms`).

    The scored set is `bench_cases(index, per_group)`; its absent samples count as missing. Not
    requested without `evalkit`; a failure is in the returned "scoring" entry, never raised (every
    video and record is kept; the "retry" command there scores the run folder again). Adds "bench":
    the folder's counts against the published 100 tasks x 5 samples.
    """
    from cosjax.evalkit import retry_command, score_arms

    cases, absent = bench_cases(index, per_group)
    retry = retry_command(out, evalkit, python)
    samples = [c.source for c in cases]
    summary = score_arms(out, ARMS, samples, absent, index.root, evalkit, python, retry)
    summary["bench"] = index.counts()
    summary["table"] = f"{index.describe()}\n\n{summary['table']}"
    return summary
