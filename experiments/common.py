"""What every experiment shares: the base config, run setup, per-case noise, decoding, video output."""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import json
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from cosjax.analysis.summaries import subsets
from cosjax.hosts import WorkGroup, work_group
from cosjax.outputs import VIDEO_QUALITY, write_mp4, write_png
from cosjax.parallel import is_main_process, replicated
from cosjax.paths import user_path
from cosjax.runs import RunFolder
from cosjax.sampling.sampler import Conditioning, SamplerSettings
from cosjax.sampling.solvers import SOLVERS
from cosjax.subjects import CaseRef, ToySubject, key_for, parse_data
from cosjax.tensorboard import Writer


@dataclasses.dataclass(frozen=True)
class BaseConfig:
    """Settings every experiment has.

    Attributes:
      data: "toy" (all families), "toy:move,maze", "toy:move@held_out", "toy:@both", or
        "vbvr-bench:PATH".
      cases: cases per task (toy: per family and split; VBVR: None = all samples).
      seed0: first toy case seed (toy cases are `generate(family, seed0 + i)`; the embedded model
        trained on seeds 0 .. 39999).
      seed: sampling seed; case c starts from N(0, I) drawn with fold_in(key(seed), crc32(c.id)).
      noise: "jax" (as `seed` says) or "reference": every case starts from the latents DiffSynth
        draws for `seed` (torch's CPU generator, `cosjax.sampling.noise`; needs torch), as VBVR's
        scripts do with seed 1 (= `VBVR_SEED`, the default) for every sample.
      steps, shift, guide_scale, solver: sampler overrides (None = the model's recommended settings).
      batch_size: cases sampled together (fixed slices of the case list, see `cosjax.runs`).
    """

    data: str = "toy"
    cases: int | None = 8
    seed0: int = 100_000
    seed: int = 1
    steps: int | None = None
    shift: float | None = None
    guide_scale: float | None = None
    solver: str | None = None
    batch_size: int = 8
    noise: str = "jax"

    def validate(self, subject, settings: SamplerSettings) -> None:
        """Checks every setting against the subject (layers) and the resolved sampler settings
        (steps), before `prepare` writes anything; raises `SettingError` naming the setting, its
        valid range and the fix. Each experiment's Config extends it with its own fields."""
        check_int("cases", self.cases, 1, none=None if subject.kind == "toy" else "every sample of each task")
        check_int("seed0", self.seed0, 0, MAX_SEED)
        check_int("seed", self.seed, 0, MAX_SEED)
        check_int("steps", self.steps, 1, none="the model's recommended steps")
        check_number("shift", self.shift, 0.0, strict=True)
        check_number("guide_scale", self.guide_scale, 0.0)
        if self.solver is not None and self.solver not in SOLVERS:
            raise setting_error("solver", self.solver, f"one of {', '.join(SOLVERS)}", "solver=euler")
        check_int("batch_size", self.batch_size, 1)


MAX_SEED = 2**31 - 1  # seeds are int32 (jax.random.key); larger ones would wrap


class SettingError(ValueError):
    """A bad experiment setting; the message names the setting, its valid range and the fix."""


def cli_value(value: Any) -> str:
    """A setting's value as it is written on the command line: 1,2,3 for tuples, none for None."""
    if value is None:
        return "none"
    if isinstance(value, tuple | list):
        return ",".join(str(v) for v in value)
    return str(value)


def setting_error(name: str, value: Any, valid: str, example: str) -> SettingError:
    """'NAME=VALUE is not valid: NAME must be VALID; rerun with e.g. EXAMPLE'."""
    return SettingError(
        f"setting {name}={cli_value(value)} is not valid: {name} must be {valid}; rerun with e.g. {example}"
    )


def _is_int(value: Any) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def check_int(name: str, value: Any, lo: int, hi: int | None = None, none: str | None = None) -> None:
    """An int in [lo, hi] (hi None: no upper bound); None is allowed when `none` says what it means."""
    if value is None and none is not None:
        return
    if not _is_int(value) or value < lo or (hi is not None and value > hi):
        valid = f"an integer >= {lo}" if hi is None else f"an integer in {lo}..{hi}"
        if none is not None:
            valid += f", or none ({none})"
        raise setting_error(name, value, valid, f"{name}={lo}")


def check_number(
    name: str, value: Any, lo: float, hi: float | None = None, strict: bool = False, optional: bool = True
) -> None:
    """A finite number >= lo (> lo when `strict`) and <= hi; None allowed when `optional`."""
    if value is None and optional:
        return
    ok = isinstance(value, int | float | np.number) and not isinstance(value, bool) and np.isfinite(value)
    ok = ok and (value > lo if strict else value >= lo) and (hi is None or value <= hi)
    if not ok:
        valid = f"a finite number {'>' if strict else '>='} {lo:g}"
        valid += "" if hi is None else f" and <= {hi:g}"
        if optional:
            valid += ", or none (the model's recommended value)"
        example = (lo + hi) / 2 if hi is not None else lo + 1.0
        raise setting_error(name, value, valid, f"{name}={example:g}")


def check_indices(name: str, values: Any, upper: int, what: str, none: str | None = None) -> None:
    """A non-empty tuple of distinct ints in [0, upper) ('what' names the count: '20 steps');
    None is allowed when `none` says what it means."""
    if values is None and none is not None:
        return
    valid = f"distinct indices in 0..{upper - 1} (the run has {upper} {what})"
    if none is not None:
        valid += f", or none ({none})"
    example = f"{name}={','.join(str(i) for i in range(min(upper, 3)))}"
    if not isinstance(values, tuple | list) or not values:
        raise setting_error(name, values, valid, example)
    if any(not _is_int(v) or not 0 <= v < upper for v in values) or len(set(values)) != len(values):
        raise setting_error(name, values, valid, example)


def parse_overrides(config_cls: type, overrides: Sequence[str]) -> dict:
    """["steps=10", "layers=1,2,3"] -> typed values for the fields of `config_cls`."""
    fields = {f.name: f for f in dataclasses.fields(config_cls)}
    hints = typing.get_type_hints(config_cls)
    out = {}
    for item in overrides:
        name, sep, raw = item.partition("=")
        if not sep:
            raise ValueError(f"override {item!r} is not NAME=VALUE")
        if name not in fields:
            raise ValueError(f"unknown setting {name!r}; known: {', '.join(sorted(fields))}")
        out[name] = _coerce(raw, hints[name], name)
    return out


def _coerce(raw: str, hint: Any, name: str) -> Any:
    args = typing.get_args(hint)
    if raw.lower() in ("none", "null") and type(None) in args:
        return None
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        options = [a for a in args if a is not type(None)]
        errors = []
        for option in options:
            try:
                return _coerce(raw, option, name)
            except ValueError as e:
                errors.append(str(e))
        raise ValueError(f"{name}={raw!r}: {'; '.join(errors)}")
    if typing.get_origin(hint) is tuple:
        inner = args[0] if args else str
        return tuple(_coerce(v, inner, name) for v in raw.split(",") if v != "")
    if hint is bool:
        if raw.lower() not in ("true", "false", "1", "0"):
            raise ValueError(f"{name} must be true or false, got {raw!r}")
        return raw.lower() in ("true", "1")
    try:
        return hint(raw)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name}={raw!r} is not a {getattr(hint, '__name__', hint)}") from e


# The device mesh of the runs started in this context: None (one device), a spec string
# ("data=2,fsdp=4", "auto") or a `jax.sharding.Mesh`; set by `cosjax run --mesh` (see `using_mesh`).
_MESH: contextvars.ContextVar[Any] = contextvars.ContextVar("cosjax_run_mesh", default=None)


@contextlib.contextmanager
def using_mesh(mesh):
    """Experiments started in this block run on `mesh` (a spec such as "data=2,fsdp=2,context=2",
    "auto", a Mesh, or None): `prepare` resolves it (`resolve_mesh`) and loads the model onto it."""
    token = _MESH.set(mesh)
    try:
        yield
    finally:
        _MESH.reset(token)


def resolve_mesh(spec, subject, cases: Sequence[CaseRef], settings: SamplerSettings, batch: int = 1):
    """The Mesh of a run (None without one).

    "auto": `cosjax.memory.choose_mesh` for the devices present (their memory limit; CPU devices
    report none), the subject's model and the largest of `cases` with CFG as `settings` say (on a
    multi-host run: for one host's devices, each host then holding whole replicas); prints
    its plan (process 0) and raises, naming the fix, when nothing fits. A spec string: that mesh
    (`cosjax.parallel.parse_mesh`), checked against the device memory when it is known.
    """
    from cosjax.memory import check_fits, choose_mesh, describe_choice, global_mesh_shape, plan_memory
    from cosjax.parallel import is_main_process, make_mesh, parse_mesh

    if spec is None or isinstance(spec, jax.sharding.Mesh):
        return spec
    limit = (jax.local_devices()[0].memory_stats() or {}).get("bytes_limit")
    inputs = subject.memory_inputs(cases, settings, **({"batch": batch} if subject.kind == "toy" else {}))
    if spec.strip() == "auto":
        hosts = jax.process_count()
        plan = choose_mesh(device_count=jax.device_count(), device_bytes=limit, hosts=hosts, **inputs)
        if is_main_process():
            print(describe_choice(plan, limit, hosts), flush=True)
        return make_mesh(**global_mesh_shape(plan, hosts))
    sizes = parse_mesh(spec)
    if limit:
        check_fits(plan_memory(mesh_shape=sizes, **inputs), limit)
    return make_mesh(**sizes)


@dataclasses.dataclass
class Setup:
    """A prepared run: subject, settings, cases, output folder and TensorBoard writer; `mesh` the
    devices it samples on (None: one device)."""

    name: str
    config: Any
    subject: Any
    settings: SamplerSettings
    cases: list[CaseRef]
    folder: RunFolder
    writer: Writer
    mesh: Any = None

    @property
    def by_id(self) -> dict[str, CaseRef]:
        return {c.id: c for c in self.cases}

    @property
    def group(self) -> WorkGroup:
        return self.folder.group

    def sampler(self):
        """The subject's sampler (on the group's mesh, a `MeshSampler`: its outputs come replicated
        over the group's devices, so every process of the group reads whole arrays)."""
        return self.subject.sampler(**_sampler_overrides(self.config))


def _sampler_overrides(config) -> dict:
    return {k: getattr(config, k) for k in ("steps", "shift", "guide_scale", "solver")}


def load_subject(model: str | None, data: str = "toy", **kwargs) -> Any:
    """The subject for `--model` (None = the embedded toy) and `--data`; `kwargs` go to
    `PipelineSubject` (`Pipeline.from_pretrained` options). `subject.load(mesh)` places the model."""
    kind, _ = parse_data(data)
    if kind == "toy":
        return ToySubject(model)
    from cosjax.pipeline_subject import PipelineSubject

    if model is None:
        raise ValueError("--data vbvr-bench needs --model (a converted Wan checkpoint folder)")
    return PipelineSubject(model, data=data, **kwargs)


def prepare(
    name: str, config, model: str | None, out: str | Path | None, mesh=None, **subject_kwargs
) -> Setup:
    """Loads the subject and cases, validates every setting (`config.validate`), loads the model
    onto the run's mesh, then checks/stores the config in the run folder and opens TensorBoard: a
    bad setting or mesh leaves `out` untouched.

    `mesh` (default: the one `using_mesh` set, else none; a spec, "auto" or a Mesh, see
    `resolve_mesh`) is split into work groups; the subject is placed on this process's group's
    sub-mesh, and the group's lead logs its cases.
    """
    subject = load_subject(model, config.data, **subject_kwargs)
    settings = subject.settings(**_sampler_overrides(config))
    config.validate(subject, settings)  # every setting, before the run folder is claimed
    _, _, spec = config.data.partition(":")
    cases = subject.cases(spec, config.cases, config.seed0)
    if not cases:
        raise ValueError(f"data {config.data!r} gave no cases")
    spec = mesh if mesh is not None else _MESH.get()
    full = resolve_mesh(spec, subject, cases, settings, batch=min(config.batch_size, len(cases)))
    group = work_group(full)
    if group.spans_processes:
        shape = dict(group.mesh.shape)
        raise ValueError(
            f"mesh {shape}: a data-parallel replica spans processes {list(group.processes)}, which "
            "the experiments cannot run yet: their samplers close over the parameters, and JAX "
            "refuses closed-over arrays of which a process holds only a part; choose the mesh so "
            f"that fsdp x context x tensor divides the {jax.local_device_count()} devices of one host "
            "(e.g. --mesh data=N,fsdp=<local devices>)"
        )
    subject.load(group.mesh)
    out = user_path(out if out is not None else Path("runs") / name)
    record = {
        "experiment": name,
        "model": subject.describe(),
        "settings": dataclasses.asdict(settings),
        "config": dataclasses.asdict(config),
    }
    folder = RunFolder(out, record, group)
    writer = Writer(out / "tb", active=folder.writes)
    if folder.owner:
        writer.text("config", f"```\n{json.dumps(folder.config, indent=2)}\n```")
    return Setup(name, config, subject, settings, cases, folder, writer, group.mesh)


def condition(setup: Setup, cases: Sequence[CaseRef]) -> Conditioning:
    """The batch's conditioning with each case's own initial noise (see `BaseConfig.seed`)."""
    cond = setup.subject.condition(cases, setup.settings)
    shape = (1, *cond.latent_shape[1:])
    source = getattr(setup.config, "noise", "jax")
    if source == "reference":
        from cosjax.sampling.noise import reference_noise

        noise = jnp.concatenate([jnp.asarray(reference_noise(shape, setup.config.seed)) for _ in cases])
    elif source == "jax":
        noise = jnp.concatenate([jax.random.normal(key_for(c, setup.config.seed), shape) for c in cases])
    else:
        raise ValueError(f"config noise={source!r}: use 'jax' or 'reference' (CLI: noise=reference)")
    cond = cond.replace(noise=noise)
    return cond if setup.group.mesh is None else replicated(cond, setup.group.mesh)


def batch_key(setup: Setup, cases: Sequence[CaseRef]) -> jax.Array:
    """The key of a batch (fresh noise of perturbations, ensemble seeds): the first case's key."""
    key = jax.random.fold_in(key_for(cases[0], setup.config.seed), 1)
    return key if setup.group.mesh is None else replicated(key, setup.group.mesh)


def score_videos(setup: Setup, cases: Sequence[CaseRef], videos: np.ndarray) -> list[float | None]:
    """Scores of uint8 videos [B, F, H, W, 3] (None where the subject has no scorer)."""
    return [setup.subject.score(c, v) for c, v in zip(cases, videos, strict=True)]


def frame_agreement(videos: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """float32 [B]: 1 - mean |last frame - reference last frame| / 255, for [B, F, H, W, 3] uint8."""
    a = videos[:, -1].astype(np.float32)
    b = reference[:, -1].astype(np.float32)
    return 1.0 - np.abs(a - b).mean(axis=(1, 2, 3)) / 255.0


def mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def save_mp4(setup: Setup, case_id: str, name: str, frames: np.ndarray, fps: int) -> None:
    """Writes a case's uint8 [F, H, W, 3] video artifact (H.264, atomic; the group lead only)."""
    if setup.folder.writes:
        write_mp4(setup.folder.artifact(case_id, name), frames, fps=fps, quality=VIDEO_QUALITY["vbvr"])


def save_png(setup: Setup, case_id: str, name: str, image: np.ndarray) -> None:
    """Writes a case's uint8 [H, W, 3] image artifact (atomic; the group lead only)."""
    if setup.folder.writes:
        write_png(setup.folder.artifact(case_id, name), image)


def save_figure(setup: Setup, name: str, fig, caption: str) -> dict:
    """Writes a summary figure (`cosjax.analysis.plots`) to `plots/NAME.png` in the run folder (atomic)
    and logs it to TensorBoard as `plots/NAME` (process 0 only); returns its entry for the summary's
    "figures" list: {"file": path relative to the run folder, "caption": one sentence}."""
    from cosjax.analysis.plots import save

    file = f"plots/{name}.png"
    if setup.folder.owner:
        save(fig, setup.folder.out / file, setup.writer, f"plots/{name}")
    return {"file": file, "caption": caption}


def group_means(rows: Sequence[dict], field: str) -> dict[str, float | None]:
    """Mean of rows[field] per task group, per split, and overall (None values skipped)."""
    return {name: mean(r[field] for r in chosen) for name, chosen in subsets(rows).items()}


def case_fields(case: CaseRef) -> dict:
    return {"group": case.group, "split": case.split, "category": case.category}


def log_means(writer: Writer, prefix: str, means: dict[str, float | None], step: int = 0) -> None:
    for name, value in means.items():
        if value is not None:
            writer.scalar(f"{prefix}/{name}", value, step)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A markdown table (floats with 3 decimals, None as '-')."""

    def fmt(v):
        if v is None:
            return "-"
        return f"{v:.3f}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def run_cases_for(setup: Setup, compute, progress: bool = True, stop_after: int | None = None) -> list[str]:
    """`cosjax.runs.run_cases` over the setup's cases (batches of `config.batch_size`)."""
    from cosjax.runs import run_cases

    ids = [c.id for c in setup.cases]
    batch = setup.config.batch_size if setup.subject.kind == "toy" else 1
    done = run_cases(setup.folder, ids, compute, batch, progress, setup.name, stop_after)
    if not is_main_process():  # the summary is logged by process 0 alone
        setup.writer.close()
    return done


def complete(setup: Setup) -> bool:
    """Whether every case of the run has its record (False after a `stop_after` stop), as process 0
    sees it, on every process."""
    ids = [c.id for c in setup.cases]
    return setup.folder.finished_ids(ids) == set(ids)


def run_and_finish(
    setup: Setup, compute, finish, progress: bool = True, stop_after: int | None = None
) -> dict:
    """An experiment's run: `run_cases_for`, then, once every case has its record, `finish()` (the
    summary dict) with "computed" (the ids computed now) added; after a `stop_after` stop just
    {"computed": ids}."""
    done = run_cases_for(setup, compute, progress, stop_after)
    if not complete(setup):
        return {"computed": done}
    return finish() | {"computed": done}
