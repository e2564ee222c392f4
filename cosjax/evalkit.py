"""Scoring generated VBVR-Bench videos with the official VBVR-EvalKit, and summarising the scores.

report = run_evalkit("VBVR-EvalKit", "runs/bench/my_model", "VBVR-Bench-Data", "runs/bench/eval")
summary = summarize(report, scan_bench("VBVR-Bench-Data"))   # missing videos count as 0
print(log_summary(writer, summary))                           # TensorBoard scalars + a markdown table

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

import json
import math
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from cosjax.data.vbvr_bench import SPLITS, BenchSample, quiet_fork

GROUPS = {"overall": SPLITS, "in_domain": SPLITS[:1], "out_of_domain": SPLITS[1:]}


class EvalKitError(RuntimeError):
    """run_evaluation.py is missing, failed, or wrote no readable results."""


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


def run_evalkit(
    evalkit_dir: str | Path,
    videos_root: str | Path,
    bench_root: str | Path,
    out_dir: str | Path,
    python: str = sys.executable,
    device: str = "cpu",
    timeout: float | None = None,
) -> EvalReport:
    """Runs `run_evaluation.py --model_path videos_root --gt_base bench_root --output_dir out_dir`.

    `python` must be an interpreter with the EvalKit's requirements (numpy, opencv, ...). The
    results file `out_dir/<videos_root name>_vbvr_results.json` is removed first so a stale one is
    never read. Raises EvalKitError (with the tail of the script's stderr) if the script is missing,
    exits non-zero, or writes no results although videos exist.
    """
    script = Path(evalkit_dir) / "run_evaluation.py"
    if not script.is_file():
        raise EvalKitError(f"VBVR-EvalKit script not found: {script}")
    videos_root, out_dir = Path(videos_root).resolve(), Path(out_dir).resolve()
    if not videos_root.is_dir():
        raise EvalKitError(f"videos folder not found: {videos_root}")
    if any(p.name.startswith("checkpoint-") for p in videos_root.iterdir()):
        raise EvalKitError(f"{videos_root} holds checkpoint-* entries; the EvalKit would score those instead")
    out_dir.mkdir(parents=True, exist_ok=True)
    results = out_dir / f"{videos_root.name}_vbvr_results.json"
    results.unlink(missing_ok=True)
    cmd = [python, str(script.resolve()), "--model_path", str(videos_root)]
    cmd += ["--gt_base", str(Path(bench_root).resolve()), "--output_dir", str(out_dir), "--device", device]
    try:
        with quiet_fork():
            proc = subprocess.run(cmd, cwd=script.parent, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        raise EvalKitError(f"{script} timed out after {timeout} s") from e
    log = proc.stdout + proc.stderr
    if proc.returncode != 0:
        command, err = " ".join(cmd), _tail(proc.stderr)
        raise EvalKitError(f"{script} failed (exit code {proc.returncode}):\n{command}\nstderr tail:\n{err}")
    if not results.is_file():
        nothing = not any(videos_root.glob("*/*/[0-9][0-9][0-9][0-9][0-9].mp4"))
        if nothing or "No videos found" in proc.stdout:  # none generated, or none in a task it knows
            return EvalReport({}, log=log)
        raise EvalKitError(f"{script} wrote no {results}; its output (tail):\n{_tail(log)}")
    report = parse_results(results)
    report.log = log
    return report


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else math.nan


def _means(samples: list[BenchSample], scores: dict[str, float], skip_missing: bool) -> dict:
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


def summarize(report: EvalReport, samples: list[BenchSample]) -> dict:
    """Bench-level scores where every bench sample without a score (no video, or a task the EvalKit
    skipped) counts as 0.

    Returns {overall, in_domain, out_of_domain: float; category / in_domain_category /
    out_of_domain_category: {name: float}; num_samples, num_scored, num_missing, num_errors,
    num_extra (scored videos that are not bench samples, ignored): int; missing: [keys];
    skip_missing: the same means with missing samples skipped (the EvalKit's own convention; nan
    where nothing was scored); evalkit_reported: the EvalKit's own overall / in / out means}.
    """
    keys = {s.key for s in samples}
    missing = [s.key for s in samples if s.key not in report.scores]
    s = report.evalkit_summary
    return {
        **_means(samples, report.scores, skip_missing=False),
        "num_samples": len(samples),
        "num_scored": len(samples) - len(missing),
        "num_missing": len(missing),
        "num_errors": sum(k in keys for k in report.errors),
        "num_extra": sum(k not in keys for k in report.scores),
        "missing": missing,
        "skip_missing": _means(samples, report.scores, skip_missing=True),
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
    """Writes the summary as scalars through a `cosjax.logging.Writer` (or None) and returns a table.

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
        f"(counted as 0); {summary['num_errors']} scorer errors (scored 0 by the EvalKit).",
    ]
    table = "\n".join(lines)
    if writer is not None:
        for name, a, b in rows:
            for prefix, value in (("vbvr", a), ("vbvr_skip_missing", b)):
                if math.isfinite(value):
                    writer.scalar(f"{prefix}/{name}", value, step)
        for k in ("num_missing", "num_samples", "num_errors"):
            writer.scalar(f"vbvr/{k}", summary[k], step)
        writer.text("vbvr/summary", table, step)
    return table
