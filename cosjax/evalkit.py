"""Scoring generated VBVR-Bench videos with the official VBVR-EvalKit, and summarising the scores.

report = run_evalkit("VBVR-EvalKit", "runs/bench/my_model", "VBVR-Bench-Data", "runs/bench/eval")
index = inspect_bench("VBVR-Bench-Data")
summary = summarize(report, index.samples, index.absent)      # missing videos count as 0
print(log_summary(writer, summary))                           # TensorBoard scalars + a markdown table

The interpreter that runs the EvalKit: `python=` here (the ensemble's `evalkit_python=` setting, or
`cosjax score --python`), else `$COSJAX_EVALKIT_PYTHON`, else cosjax's own. It needs what the
EvalKit imports: `pip install "cosjax[evalkit]"` (opencv-python-headless, Pillow, tqdm; numpy and
imageio come with cosjax), or the EvalKit's own `requirements.txt`. `check_evalkit` tries those
imports in a second or two, before hours of generation.

What the EvalKit does (read from Video-Reason/VBVR-EvalKit `run_evaluation.py`, 2026-04):

* Command line: `python run_evaluation.py --model_path DIR --gt_base BENCH [--output_dir OUT]
  [--device cuda|cpu]` (or `--models_base DIR [--models NAME ...]` instead of `--model_path`). It
  scores with `evaluator.evaluate(..., task_specific_only=True)`: the task-specific rule only, never
  the 5-part weighted score of `evaluate.py` / the `VBVRBench` API, which we never call.
* Videos: DIR/{In-Domain_50,Out-of-Domain_50}/<task>/<NNNNN>.mp4 (exactly 5 digits). Task folders
  whose name is not a key of its evaluator map are skipped with a warning; a DIR holding
  `checkpoint-*` entries is read as one model per checkpoint instead. GT files are looked up as
  BENCH/<split>/<task>/<NNNNN>/{ground_truth.mp4, first_frame.png, final_frame.png, prompt.txt}.
* Output: OUT/<basename(DIR)>_vbvr_results.json (and OUT/all_models_summary.json), a JSON object
  {model_name, model_path, timestamp, samples: [{video_path, video_file: "00000.mp4", task_name,
  split: "In_Domain"|"Out_of_Domain", category, folder: "In-Domain_50"|"Out-of-Domain_50", score,
  dimensions, error}], summary: {In_Domain|Out_of_Domain|overall: {mean_score, num_samples,
  by_task: {task: mean}, by_category: {category: mean}}}}. A video whose evaluator raised gets
  score 0.0 and an `error`. If no video is found it prints "No videos found" and writes nothing.
* Aggregation: plain means over the videos it found, so a missing video is skipped, not counted.
  `summarize` reports that convention too (`skip_missing`), next to ours (missing = 0).
"""

from __future__ import annotations

import ast
import contextlib
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cosjax.data.vbvr_bench import FILES, SPLITS, AbsentSample, BenchSample
from cosjax.outputs import quiet_fork
from cosjax.paths import AnyPath, is_local, is_url, user_path, write_atomic

GROUPS = {"overall": SPLITS, "in_domain": SPLITS[:1], "out_of_domain": SPLITS[1:]}
PYTHON_ENV = "COSJAX_EVALKIT_PYTHON"


class EvalKitError(RuntimeError):
    """run_evaluation.py is missing, failed, or wrote no readable results."""


def resolve_python(setting: str | None = None) -> str:
    """The EvalKit's interpreter: `setting`, else $COSJAX_EVALKIT_PYTHON, else this interpreter.

    A bare name ("python3.11") is looked up on PATH. Raises EvalKitError naming where the value came
    from when it is not an executable file.
    """
    source, value = "evalkit_python", setting
    if not value:
        source, value = PYTHON_ENV, os.environ.get(PYTHON_ENV)
    if not value:
        return sys.executable
    found = shutil.which(value) if os.sep not in value else value
    if not found or not os.access(found, os.X_OK) or not os.path.isfile(found):
        raise EvalKitError(
            f"the EvalKit interpreter {value!r} (from {source}) is not an executable file; set "
            f"{source} to a Python that has the EvalKit's requirements (pip install 'cosjax[evalkit]')"
        )
    return str(found)


def install_hint(python: str, evalkit_dir: str | Path) -> str:
    """How to give `python` what the EvalKit imports, or to pick another interpreter."""
    req = user_path(evalkit_dir) / "requirements.txt"
    return (
        f"install the EvalKit's requirements into that interpreter ({python} -m pip install "
        f"'cosjax[evalkit]', or -r {req}), or point evalkit_python=PY (cosjax score --python PY, "
        f"${PYTHON_ENV}) at one that has them"
    )


def _script_imports(script: Path) -> list[str]:
    """Top-level modules run_evaluation.py imports (`import a.b` -> a.b, `from c.d import e` -> c.d)."""
    names = []
    for node in ast.parse(script.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.append(node.module)
    return list(dict.fromkeys(names))


def check_evalkit(evalkit_dir: str | Path, python: str | None = None, timeout: float = 120) -> str | None:
    """None if `python` can import what `evalkit_dir/run_evaluation.py` imports; else why not.

    The imports are read from the script itself (for the real EvalKit: numpy, tqdm and its
    `vbvr_bench.evaluators`, which imports cv2), run in the EvalKit's folder as the script would.
    """
    script = user_path(evalkit_dir) / "run_evaluation.py"
    if not script.is_file():
        return f"VBVR-EvalKit script not found: {script}"
    try:
        python = resolve_python(python)
        code = "".join(f"import {name}\n" for name in _script_imports(script))
        with quiet_fork():
            proc = subprocess.run(
                [python, "-c", code], cwd=script.parent, capture_output=True, text=True, timeout=timeout
            )
    except (EvalKitError, OSError, SyntaxError, subprocess.TimeoutExpired) as e:
        return f"cannot check the EvalKit's imports: {type(e).__name__}: {e}"
    if proc.returncode != 0:
        return (
            f"{python} cannot import what {script} imports:\n{_tail(proc.stderr, 1500)}\n"
            f"fix: {install_hint(python, evalkit_dir)}"
        )
    return None


@dataclass
class EvalReport:
    """Per-sample task-specific scores in [0, 1], keyed '<split folder>/<task>/<index>' (BenchSample.key).

    errors: the keys whose evaluator raised (the EvalKit scores those 0.0). evalkit_summary: the
    EvalKit's own `summary` object. results_path is None when it found no video to score.
    """

    scores: dict[str, float]
    errors: dict[str, str] = field(default_factory=dict)
    evalkit_summary: dict = field(default_factory=dict)
    results_path: Path | None = None
    log: str = ""


def _tail(text: str, n: int = 3000) -> str:
    return text[-n:].strip() or "(empty)"


def parse_results(path: str | Path) -> EvalReport:
    """Reads one `<model>_vbvr_results.json` into an EvalReport."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
        scores, errors = {}, {}
        for s in data["samples"]:
            key = f"{s['folder']}/{s['task_name']}/{Path(s['video_file']).stem}"
            scores[key] = float(s["score"])
            if s.get("error"):
                errors[key] = str(s["error"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise EvalKitError(f"cannot parse EvalKit results {path}: {type(e).__name__}: {e}") from e
    return EvalReport(scores, errors, data.get("summary", {}), path)


def _local(path: str | Path, what: str) -> Path:
    if is_url(path):
        raise EvalKitError(
            f"the EvalKit reads local folders only, got the {what} {path}: copy it to this machine "
            "(gcloud storage rsync -r URL DIR) or mount the bucket (gcsfuse); `cosjax score RUN_DIR` "
            "and the ensemble's own scoring step (`score_arms`) make those copies themselves"
        )
    return user_path(path).resolve()


def run_evalkit(
    evalkit_dir: str | Path,
    videos_root: str | Path,
    bench_root: str | Path,
    out_dir: str | Path,
    python: str | None = None,
    device: str = "cpu",
    timeout: float | None = None,
) -> EvalReport:
    """Runs `run_evaluation.py --model_path videos_root --gt_base bench_root --output_dir out_dir`.

    `python`: the interpreter (see `resolve_python`); it must have the EvalKit's requirements. The
    results file `out_dir/<videos_root name>_vbvr_results.json` is removed first so a stale one is
    never read. Raises EvalKitError saying why (the script's stderr tail, the interpreter, the
    command) and how to fix it if the script is missing, exits non-zero, or writes no results
    although videos exist. Nothing but that results file is ever removed.
    """
    script = _local(evalkit_dir, "evalkit folder") / "run_evaluation.py"
    if not script.is_file():
        raise EvalKitError(f"VBVR-EvalKit script not found: {script} (evalkit= must be its checkout folder)")
    python = resolve_python(python)
    videos_root, out_dir = _local(videos_root, "videos folder"), _local(out_dir, "output folder")
    bench_root = _local(bench_root, "bench folder")
    if not videos_root.is_dir():
        raise EvalKitError(f"videos folder not found: {videos_root}")
    if any(p.name.startswith("checkpoint-") for p in videos_root.iterdir()):
        raise EvalKitError(f"{videos_root} holds checkpoint-* entries; the EvalKit would score those instead")
    out_dir.mkdir(parents=True, exist_ok=True)
    results = out_dir / f"{videos_root.name}_vbvr_results.json"
    results.unlink(missing_ok=True)
    cmd = [python, str(script.resolve()), "--model_path", str(videos_root)]
    cmd += ["--gt_base", str(bench_root), "--output_dir", str(out_dir), "--device", device]
    try:
        with quiet_fork():
            proc = subprocess.run(cmd, cwd=script.parent, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        raise EvalKitError(f"{script} timed out after {timeout} s (interpreter {python})") from e
    except OSError as e:
        raise EvalKitError(f"cannot start the EvalKit interpreter {python}: {e}") from e
    log = proc.stdout + proc.stderr
    if proc.returncode != 0:
        command, err = " ".join(cmd), _tail(proc.stderr)
        fix = (
            install_hint(python, evalkit_dir)
            if "ModuleNotFoundError" in err or "ImportError" in err
            else "read the stderr tail above; fix the EvalKit or its inputs"
        )
        raise EvalKitError(
            f"{script} failed (exit code {proc.returncode}) with interpreter {python}:\n{command}\n"
            f"stderr tail:\n{err}\nfix: {fix}"
        )
    if not results.is_file():
        nothing = not any(videos_root.glob("*/*/[0-9][0-9][0-9][0-9][0-9].mp4"))
        if nothing or "No videos found" in proc.stdout:  # none generated, or none in a task it knows
            return EvalReport({}, log=log)
        raise EvalKitError(
            f"{script} wrote no {results} (interpreter {python}); its output (tail):\n{_tail(log)}"
        )
    report = parse_results(results)
    report.log = log
    return report


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else math.nan


def _means(
    samples: Sequence[BenchSample | AbsentSample], scores: dict[str, float], skip_missing: bool
) -> dict:
    def mean_of(group):
        vals = [scores.get(s.key) for s in group]
        return _mean([v for v in vals if v is not None] if skip_missing else [v or 0.0 for v in vals])

    out = {g: mean_of([s for s in samples if s.split in splits]) for g, splits in GROUPS.items()}
    for g, splits in GROUPS.items():
        sub = [s for s in samples if s.split in splits]
        name = "category" if g == "overall" else f"{g}_category"
        out[name] = {
            c: mean_of([s for s in sub if s.category == c]) for c in sorted({s.category for s in sub})
        }
    return out


def summarize(
    report: EvalReport, samples: Sequence[BenchSample], absent: Sequence[AbsentSample] = ()
) -> dict:
    """Bench-level scores where every bench sample without a score (no video, a task the EvalKit
    skipped, or a sample absent from the bench folder) counts as 0.

    samples: the bench samples the run generated; absent: those VBVR-Bench.json lists but the folder
    lacks (`BenchIndex.absent`), missing by definition.

    Returns {overall, in_domain, out_of_domain: float; category / in_domain_category /
    out_of_domain_category: {name: float}; num_samples (samples + absent), num_scored, num_missing,
    num_absent, num_errors, num_extra (scored videos that are not bench samples, ignored): int;
    missing, absent: [keys]; skip_missing: the same means with missing samples skipped (the
    EvalKit's own convention; nan where nothing was scored); evalkit_reported: the EvalKit's own
    overall / in / out means}.
    """
    everything = [*samples, *absent]
    keys = {s.key for s in everything}
    missing = [s.key for s in everything if s.key not in report.scores]
    s = report.evalkit_summary
    return {
        **_means(everything, report.scores, skip_missing=False),
        "num_samples": len(everything),
        "num_scored": len(everything) - len(missing),
        "num_missing": len(missing),
        "num_absent": len(absent),
        "absent": [a.key for a in absent],
        "num_errors": sum(k in keys for k in report.errors),
        "num_extra": sum(k not in keys for k in report.scores),
        "missing": missing,
        "skip_missing": _means(everything, report.scores, skip_missing=True),
        "evalkit_reported": {
            g: s.get(k, {}).get("mean_score", math.nan)
            for g, k in (
                ("overall", "overall"),
                ("in_domain", "In_Domain"),
                ("out_of_domain", "Out_of_Domain"),
            )
        },
    }


def _fmt(x: float) -> str:
    return "-" if x is None or not math.isfinite(x) else f"{x:.4f}"


def log_summary(writer, summary: dict, step: int = 0) -> str:
    """Writes the summary as scalars through a `cosjax.tensorboard.Writer` (or None) and returns a table.

    Tags: vbvr/{overall,in_domain,out_of_domain}, vbvr/category/<name>,
    vbvr/{in_domain,out_of_domain}_category/<name>, vbvr/num_missing, vbvr/num_samples, and the
    EvalKit convention under vbvr_skip_missing/... . The markdown table is also logged as text.
    """
    skip = summary["skip_missing"]
    rows = [(g, summary[g], skip[g]) for g in GROUPS]
    for group in ("category", "in_domain_category", "out_of_domain_category"):
        rows += [(f"{group}/{c}", v, skip[group][c]) for c, v in summary[group].items()]
    lines = [
        "| group | score (missing = 0) | score (missing skipped, EvalKit) |",
        "|---|---|---|",
        *(f"| {name} | {_fmt(a)} | {_fmt(b)} |" for name, a, b in rows),
        "",
        f"{summary['num_missing']} of {summary['num_samples']} bench videos missing or unscored "
        f"(counted as 0; {summary.get('num_absent', 0)} of them absent from the bench folder); "
        f"{summary['num_errors']} scorer errors (scored 0 by the EvalKit).",
    ]
    table = "\n".join(lines)
    if writer is not None:
        for name, a, b in rows:
            for prefix, value in (("vbvr", a), ("vbvr_skip_missing", b)):
                if math.isfinite(value):
                    writer.scalar(f"{prefix}/{name}", value, step)
        for k in ("num_missing", "num_absent", "num_samples", "num_errors"):
            writer.scalar(f"vbvr/{k}", summary.get(k, 0), step)
        writer.text("vbvr/summary", table, step)
    return table


def _copy(src: AnyPath, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_bytes(src.read_bytes())


@contextlib.contextmanager
def _local_inputs(
    out: AnyPath, arms: Sequence[str], samples: Sequence[BenchSample], bench_root: AnyPath
) -> Iterator[tuple[Path, Path]]:
    """(run folder, bench folder) as local folders for the EvalKit, which reads plain files: each
    itself when local, else a temporary copy of what the EvalKit reads (every arm's videos; the
    scored samples' ground-truth files), deleted afterwards."""
    if is_local(out) and is_local(bench_root):
        yield out, bench_root
        return
    with tempfile.TemporaryDirectory(prefix="cosjax-evalkit-") as tmp:
        local_out, local_bench = out, bench_root
        if not is_local(out):
            local_out = Path(tmp) / out.name
            for arm in arms:
                videos = out / "videos" / arm
                for video in videos.glob("*/*/*.mp4") if videos.is_dir() else ():
                    split, task = video.parent.parent.name, video.parent.name
                    _copy(video, local_out / "videos" / arm / split / task / video.name)
        if not is_local(bench_root):
            local_bench = Path(tmp) / "bench"
            for s in samples:
                for name in FILES:
                    _copy(s.folder / name, local_bench / s.split / s.task / s.index / name)
        yield local_out, local_bench


def score_arms(
    out: str | Path,
    arms: Sequence[str],
    samples: Sequence[BenchSample],
    absent: Sequence[AbsentSample],
    bench_root: str | Path,
    evalkit_dir: str | Path | None,
    python: str | None = None,
    retry: str = "",
) -> dict:
    """Scores each arm's videos `out/videos/<arm>` with the EvalKit; a failure is returned, not raised.

    The EvalKit writes into `out/evalkit/<arm>`, TensorBoard scalars go to `out/tb/evalkit_<arm>`;
    nothing else in `out` is touched, so a failed scoring leaves every video and record as it was.
    `out` and `bench_root` may be URLs (`gs://...`): the EvalKit then scores a local temporary copy
    and its results file is uploaded to `out/evalkit/<arm>`. `retry`: the command that scores the
    finished run again (put in the messages).

    Returns {"videos": {arm: folder}, "scoring": {status: "scored" | "failed" | "not requested",
    evalkit, python, retry, error (failed)}, <arm>: `summarize(...)` for every arm scored,
    "table": markdown}.
    """
    from cosjax.tensorboard import Writer

    out = user_path(out)
    summary: dict = {"videos": {arm: str(out / "videos" / arm) for arm in arms}}
    if not evalkit_dir:
        summary["scoring"] = {"status": "not requested", "retry": retry}
        summary["table"] = f"no evalkit=PATH given: videos written, not scored; to score them: {retry}"
        return summary
    scoring = {"status": "scored", "evalkit": str(evalkit_dir), "python": python, "retry": retry}
    summary["scoring"] = scoring
    tables = []
    try:
        scoring["python"] = resolve_python(python)
        with _local_inputs(out, arms, samples, user_path(bench_root)) as (local_out, local_bench):
            for arm in arms:
                report = run_evalkit(
                    evalkit_dir,
                    local_out / "videos" / arm,
                    local_bench,
                    local_out / "evalkit" / arm,
                    scoring["python"],
                )
                if report.results_path is not None and local_out != out:  # a URL run folder
                    uploaded = out / "evalkit" / arm / report.results_path.name
                    write_atomic(uploaded, report.results_path.read_bytes())
                    report.results_path = uploaded
                summary[arm] = summarize(report, samples, absent)
                writer = Writer(out / "tb" / f"evalkit_{arm}")
                tables.append(f"### {arm}\n{log_summary(writer, summary[arm])}")
                writer.close()
    except EvalKitError as e:
        scoring.update(status="failed", error=str(e))
        tables.append(
            f"EvalKit scoring failed; every video and record is kept.\n{e}\n"
            f"retry once fixed (nothing is regenerated): {retry}"
        )
    summary["table"] = "\n\n".join(tables)
    return summary


def retry_command(run_dir: str | Path, evalkit_dir: str | Path | None, python: str | None = None) -> str:
    """The command line that scores a finished ensemble run folder without regenerating anything."""
    import shlex

    words = ["cosjax", "score", str(run_dir), "--evalkit", str(evalkit_dir or "PATH/TO/VBVR-EvalKit")]
    if python:
        words += ["--python", str(python)]
    return shlex.join(words)
