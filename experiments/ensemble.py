"""The training-free ensemble (Table 1) against the plain sampler, scored per task.

    cosjax run ensemble                                    # embedded model, 8 cases per family and split
    cosjax run ensemble --data toy:@both cases=100 seeds=3
    cosjax run ensemble --model ckpt/vbvr-wan2.2 --data vbvr-bench:VBVR-Bench-Data evalkit=../VBVR-EvalKit
    cosjax score runs/ensemble --evalkit ../VBVR-EvalKit --python ../evalkit-venv/bin/python   # retry

The ensemble (`cosjax.ensemble`) runs `seeds` trajectories whose residual streams at `layers`
(None = the middle layers [L/2, 3L/4), the paper's 20-29 of 40) are replaced by their mean across
seeds at `merge_steps` (default: step 0). Each seed then continues on its own; seed 0 starts from
the plain run's initial noise, so "plain" and "ensemble" differ only by the merge. The scored
ensemble video is seed 0's (`score_seed`).

Noise: both arms draw their initial noise from the batch key (the first case's key, see
`experiments.common.batch_key`), not per case, because the ensemble derives its other seeds from
the key.

Toy subject: videos are scored at once by the task scorers; the summary's "gain" holds, for the
solved share and the score, the mean gain ensemble - plain over cases with its 95% paired bootstrap
interval (`cosjax.analysis.summaries.gains`) overall, per split, per family and per family and split
(TensorBoard `gain_solved/*`, `gain_score/*`; figure `plots/ensemble_gain.png`).

VBVR-Bench: both arms' videos are written in the EvalKit layout under `videos/plain/` and
`videos/ensemble/`; with `evalkit=PATH` the EvalKit's task-specific scoring runs on each and
overall / in-domain / out-of-domain / per-category means are logged (missing videos and samples
absent from the bench counted as failures, see `cosjax.evalkit.summarize`).

The EvalKit runs under `evalkit_python=PY` (else $COSJAX_EVALKIT_PYTHON, else cosjax's own
interpreter), which needs what it imports (`pip install "cosjax[evalkit]"`); that is checked before
generating starts (a warning: the videos are worth keeping either way). If scoring fails, every
video and record stays, results.json is written with the error, the command exits with status 3,
and `cosjax score RUN_DIR --evalkit PATH [--python PY]` (the `score` function here) scores the
finished folder without loading the model or generating anything. Rerunning the same `cosjax run`
command resumes straight to scoring too, but loads the model first.
"""

from __future__ import annotations

import dataclasses
import json
import logging

import jax

from cosjax.analysis import plots
from cosjax.analysis.summaries import gains
from cosjax.paths import user_path
from cosjax.transforms import ensemble
from experiments import common

NAME = "ensemble"

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Config(common.BaseConfig):
    """Attributes (besides `common.BaseConfig`):
    seeds: ensemble size.
    layers: merged layers (None = the middle layers).
    merge_steps: steps at which the streams are merged.
    score_seed: which seed's video is scored as the ensemble's output.
    success: score threshold of a solved case.
    evalkit: VBVR-EvalKit folder (VBVR-Bench only).
    evalkit_python: the interpreter that runs the EvalKit (None: $COSJAX_EVALKIT_PYTHON, else
      cosjax's own).
    """

    data: str = "toy:@both"
    seeds: int = 3
    layers: tuple[int, ...] | None = None
    merge_steps: tuple[int, ...] = (0,)
    score_seed: int = 0
    success: float = 0.5
    evalkit: str | None = None
    evalkit_python: str | None = None

    def validate(self, subject, settings) -> None:
        super().validate(subject, settings)
        common.check_int("seeds", self.seeds, 1, 64)
        common.check_indices("layers", self.layers, subject.num_layers, "layers", "the middle layers")
        common.check_indices("merge_steps", self.merge_steps, settings.steps, "steps")
        common.check_int("score_seed", self.score_seed, 0, self.seeds - 1)
        common.check_number("success", self.success, 0.0, 1.0, optional=False)


def _check_scoring(config: Config, out) -> None:
    """Warns now, not after hours of generation, when the EvalKit cannot run as configured."""
    from cosjax.evalkit import check_evalkit, retry_command
    from cosjax.parallel import is_main_process

    if not config.evalkit or not is_main_process():
        return
    if not config.data.startswith("vbvr-bench:"):
        log.warning("evalkit=%s is ignored: %s is scored by its task scorers", config.evalkit, config.data)
        return
    problem = check_evalkit(config.evalkit, config.evalkit_python)
    if problem:
        retry = retry_command(out or "runs/ensemble", config.evalkit, config.evalkit_python)
        log.warning(
            "the EvalKit cannot run as configured, so scoring at the end will fail (the videos and "
            "records are kept; once fixed, score them with: %s):\n%s",
            retry,
            problem,
        )


def run(config: Config = Config(), model=None, out=None, progress=True, stop_after=None) -> dict:
    _check_scoring(config, out)
    setup = common.prepare(NAME, config, model, out)
    base = setup.sampler()
    plain = jax.jit(base)
    merged = jax.jit(ensemble(base, config.seeds, config.layers, config.merge_steps))

    def compute(ids):
        cases = [setup.by_id[i] for i in ids]
        cond = setup.subject.condition(cases, setup.settings)
        key = common.batch_key(setup, cases)
        video_plain = setup.subject.decode(plain(cond, key).latents, cases)
        latents = merged(cond, key).latents  # [seeds, B, C, T, H, W]
        video_ens = setup.subject.decode(latents[config.score_seed], cases)
        records = []
        for b, case in enumerate(cases):
            record = {
                **common.case_fields(case),
                "plain_score": setup.subject.score(case, video_plain[b]),
                "ensemble_score": setup.subject.score(case, video_ens[b]),
            }
            if setup.subject.kind != "toy" and setup.folder.writes:
                for arm, videos in (("plain", video_plain), ("ensemble", video_ens)):
                    path = setup.subject.write_output(setup.folder.out / "videos" / arm, case, videos[b])
                    record[f"{arm}_video"] = str(path)
            records.append(record)
        return records

    return common.run_and_finish(setup, compute, lambda: finish(setup, config), progress, stop_after)


def finish(setup, config: Config) -> dict:
    rows = setup.folder.records(c.id for c in setup.cases)
    summary: dict = {}
    if setup.subject.kind == "toy":
        for r in rows:
            r["plain_solved"] = float(r["plain_score"] >= config.success)
            r["ensemble_solved"] = float(r["ensemble_score"] >= config.success)
        for field in ("plain_score", "ensemble_score", "plain_solved", "ensemble_solved"):
            summary[field] = common.group_means(rows, field)
            common.log_means(setup.writer, field, summary[field])
        names = list(summary["plain_score"])
        summary["table"] = common.markdown_table(
            ["subset", "plain score", "ensemble score", "plain solved", "ensemble solved"],
            [
                [
                    n,
                    summary["plain_score"][n],
                    summary["ensemble_score"][n],
                    summary["plain_solved"][n],
                    summary["ensemble_solved"][n],
                ]
                for n in names
            ],
        )
        summary["gain"] = {
            "solved": gains(rows, "plain_solved", "ensemble_solved"),
            "score": gains(rows, "plain_score", "ensemble_score"),
        }
        for measure, by_subset in summary["gain"].items():
            for name, g in by_subset.items():
                for field in ("mean", "low", "high"):
                    setup.writer.scalar(f"gain_{measure}/{name}/{field}", g[field], 0)
        summary["gain_table"] = gain_table(summary["gain"])
        summary["figures"] = [gain_figure(setup, summary["gain"]["solved"])]
    else:
        summary = setup.subject.evaluate_arms(setup, config, rows)
    setup.writer.text("summary", summary.get("table", ""))
    setup.writer.close()
    setup.folder.write_results(summary, rows)
    _raise_if_scoring_failed(summary, setup.folder.out)
    return summary


def gain_table(gain: dict) -> str:
    """Markdown: per subset, cases and the solved-share and score gains with their 95% intervals."""
    rows = []
    for name, g in gain["solved"].items():
        sc = gain["score"].get(name)
        interval = f"[{g['low']:+.3f}, {g['high']:+.3f}]"
        score_part = ["-", "-"] if sc is None else [sc["mean"], f"[{sc['low']:+.3f}, {sc['high']:+.3f}]"]
        rows.append([name, g["cases"], g["mean"], interval, *score_part])
    header = ["subset", "cases", "solved gain", "95% interval", "score gain", "95% interval"]
    return common.markdown_table(header, rows)


def gain_figure(setup, solved: dict) -> dict:
    """The solved-share gain per family and split (and overall) with its 95% interval."""
    names = ["overall", *[n for n in solved if "@" in n]]
    fig = plots.interval_figure(
        [f"{n} ({solved[n]['cases']})" for n in names],
        [solved[n]["mean"] for n in names],
        [solved[n]["low"] for n in names],
        [solved[n]["high"] for n in names],
        "solved share: ensemble - plain",
        "Ensemble gain over the plain sampler (95% paired bootstrap interval over cases)",
    )
    caption = (
        "Gain of the ensemble over the plain sampler in solved share, per family and split (case "
        "count in brackets), with its 95% paired bootstrap interval: an interval that crosses the "
        "dashed zero line is no measured gain."
    )
    return common.save_figure(setup, "ensemble_gain", fig, caption)


def _raise_if_scoring_failed(summary: dict, out) -> None:
    from cosjax.evalkit import EvalKitError

    scoring = summary.get("scoring", {})
    if scoring.get("status") == "failed":
        raise EvalKitError(
            f"{scoring['error']}\n\nEvery video and record is kept in {out} (results.json holds the "
            f"records and this error). Once fixed, score without regenerating: {scoring['retry']}"
        )


def score(run_dir, evalkit: str | None = None, python: str | None = None, bench: str | None = None) -> dict:
    """Scores a finished VBVR-Bench ensemble run folder with the EvalKit: no model, no generation.

    Args:
      run_dir: the run's --out folder (every case must have its record).
      evalkit, python: the EvalKit folder and its interpreter (default: the run's `evalkit` /
        `evalkit_python` settings; then $COSJAX_EVALKIT_PYTHON, then this interpreter).
      bench: the bench folder to score against (default: the run's `--data vbvr-bench:PATH`), e.g. a
        local copy of a bench the run read from a bucket.

    Rewrites results.json (same records, new scores) and logs to TensorBoard like the run's own
    scoring step. Raises EvalKitError (exit status 3 from the CLI) if scoring fails again, leaving
    the folder as it was apart from results.json's "scoring" entry.
    """
    from cosjax.data.vbvr_bench import inspect_bench
    from cosjax.pipeline_subject import bench_cases, score_bench_run
    from cosjax.runs import RunFolder
    from cosjax.tensorboard import Writer

    run_dir = user_path(run_dir)
    config_file = run_dir / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"{config_file} not found: give the --out folder of a `cosjax run ensemble`")
    stored = json.loads(config_file.read_text())
    if stored.get("experiment") != NAME:
        raise ValueError(f"{run_dir} is a {stored.get('experiment')!r} run; only ensemble runs are scored")
    run_config = stored["config"]
    kind, _, root = run_config["data"].partition(":")
    if kind != "vbvr-bench":
        raise ValueError(
            f"{run_dir} ran on {run_config['data']!r}: toy runs are scored as their cases finish"
        )
    evalkit, python = evalkit or run_config.get("evalkit"), python or run_config.get("evalkit_python")
    if not evalkit:
        raise ValueError("no EvalKit folder: pass --evalkit PATH (a VBVR-EvalKit checkout)")
    index = inspect_bench(bench or root)
    cases, _ = bench_cases(index, run_config["cases"])
    folder = RunFolder(run_dir, stored)
    unfinished = [c.id for c in cases if not folder.finished(c.id)]
    if unfinished:
        raise ValueError(
            f"{len(unfinished)} of {len(cases)} cases in {run_dir} have no record yet ({unfinished[0]}, "
            "...): finish the run first by rerunning its `cosjax run ensemble` command (it resumes)"
        )
    rows = folder.records(c.id for c in cases)
    summary = score_bench_run(run_dir, index, run_config["cases"], evalkit, python)
    writer = Writer(run_dir / "tb")
    writer.text("summary", summary["table"])
    writer.close()
    folder.write_results(summary, rows)
    _raise_if_scoring_failed(summary, run_dir)
    return summary
