"""Trajectory (Fig. 1-2): decode x0-hat at every denoising step into a step x frame grid per case.

    cosjax run trajectory                                  # embedded model, 8 cases per toy family
    cosjax run trajectory --data toy:maze cases=4 show_steps=0,2,4,8,16,19
    cosjax run trajectory --model ckpt/vbvr-wan2.2 --data vbvr-bench:VBVR-Bench-Data cases=1

x0-hat_s = x_s - sigma_s v_s with the CFG-combined velocity (`cosjax.trace_x0`), decoded like the
final latents. Per case it writes `grid.png` (rows = the shown steps, columns = frames), `x0.mp4`
(the x0-hat videos of the shown steps one after another) and `final.mp4`, and logs the grid and a
GIF of the final video to TensorBoard. Where the subject has a scorer, x0-hat of every step is
scored like a final video: the curve "score of x0-hat at step s" shows when the model commits
to a solution (Chain-of-Steps). `commit_step` of a case = the first step from which every later
x0-hat scores >= `success` (None if the final video fails).

Also per step: the solved share (x0-hat score >= `success`), and for multi-answer cases (whose
solution lists several valid answers, `cosjax.data.maze_routes`) the candidates present in each
step's x0-hat (`cosjax.analysis.phenomena`: at its THRESHOLD and at each of `thresholds`), the
candidates of the final video, and the phenomena commit step (first step from which the x0-hat is
solved with the final answer; S = never). Summary figures in `plots/` (and TensorBoard `plots/*`):
score and solved share vs step, candidates vs step; the first `labelled_grids` cases of each family
and split get `grid_labelled.png` (rows = step index and sigma, columns = frame index).
Per path length (cases whose solution has "moves", the toy maze families): final vs step-0 x0-hat
solved share and median commit step (`cosjax.analysis.summaries.length_summary`, results.json
"by_length", plot `solved_vs_length.png`): the lengths where the two part are where the steps add
to what one forward pass computes.
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np

from cosjax.analysis import plots
from cosjax.analysis.images import step_frame_grid, upscale
from cosjax.analysis.phenomena import candidates_present, trajectory_measures
from cosjax.analysis.summaries import candidate_summary, length_summary, step_means, subsets
from cosjax.sampling.schedules import make_schedule
from cosjax.transforms import trace_x0
from experiments import common

NAME = "trajectory"


@dataclasses.dataclass(frozen=True)
class Config(common.BaseConfig):
    """Attributes (besides `common.BaseConfig`):
    show_steps: steps drawn in the grid and x0.mp4 (None = all); scores use every step.
    success: score threshold of a solved case.
    upscale: nearest-neighbour magnification of the toy's 32-pixel frames in images.
    thresholds: presence thresholds of the candidates sweep (multi-answer cases).
    labelled_grids: cases per family and split whose labelled grid is drawn (matplotlib).
    case_files: cases per family and split whose grid.png, x0.mp4, final.mp4 and TensorBoard
      images are written (None = every case; large runs need only a few to look at).
    """

    cases: int | None = 2
    show_steps: tuple[int, ...] | None = None
    success: float = 0.5
    upscale: int = 4
    thresholds: tuple[float, ...] = (0.15, 0.25, 0.4)
    labelled_grids: int = 1
    case_files: int | None = None

    def validate(self, subject, settings) -> None:
        super().validate(subject, settings)
        common.check_indices("show_steps", self.show_steps, settings.steps, "steps", "every step")
        common.check_number("success", self.success, 0.0, 1.0, optional=False)
        common.check_int("upscale", self.upscale, 1, 64)
        if not self.thresholds:
            raise common.setting_error("thresholds", self.thresholds, "numbers in (0, 1]", "thresholds=0.25")
        for t in self.thresholds:
            common.check_number("thresholds", t, 0.0, 1.0, strict=True, optional=False)
        common.check_int("labelled_grids", self.labelled_grids, 0)
        common.check_int("case_files", self.case_files, 0, none="every case")


def is_multi_answer(case) -> bool:
    """Whether a case's solution lists several valid answers (what the candidates measures need)."""
    return len(getattr(case.source, "solution", {}).get("answer_boxes", [])) >= 2


def labelled_ids(cases, per_subset: int) -> list[str]:
    """The ids of the first `per_subset` cases of each (group, split), in case order."""
    seen: dict[tuple[str, str], int] = {}
    out = []
    for c in cases:
        k = (c.group, c.split)
        seen[k] = seen.get(k, 0) + 1
        if seen[k] <= per_subset:
            out.append(c.id)
    return out


def commit_step(scores: list[float | None], success: float) -> int | None:
    """First step s with scores[s:] all >= success (None if the last fails or scores are None)."""
    if not scores or scores[-1] is None or scores[-1] < success:
        return None
    s = len(scores)
    while s > 0 and scores[s - 1] is not None and scores[s - 1] >= success:
        s -= 1
    return s


def run(config: Config = Config(), model=None, out=None, progress=True, stop_after=None) -> dict:
    setup = common.prepare(NAME, config, model, out)
    sample = jax.jit(trace_x0(setup.sampler()))
    steps = setup.settings.steps
    shown = list(range(steps)) if config.show_steps is None else list(config.show_steps)
    index = {c.id: i for i, c in enumerate(setup.cases)}
    sigmas = make_schedule(setup.settings.grid, steps, setup.settings.shift).sigmas[:steps]
    labelled = set(labelled_ids(setup.cases, config.labelled_grids))
    with_files = (
        {c.id for c in setup.cases}
        if config.case_files is None
        else set(labelled_ids(setup.cases, config.case_files))
    )

    def compute(ids):
        cases = [setup.by_id[i] for i in ids]
        result = sample(common.condition(setup, cases), common.batch_key(setup, cases))
        final = setup.subject.decode(result.latents, cases)
        x0 = np.asarray(result.trace.x0)  # [S, B, C, T, H, W]
        x0_videos = np.stack([setup.subject.decode(x0[s], cases) for s in range(steps)], axis=1)
        records = []
        for b, case in enumerate(cases):
            scores = [setup.subject.score(case, x0_videos[b, s]) for s in range(steps)]
            final_score = setup.subject.score(case, final[b])
            if case.id in with_files:
                grid = upscale(step_frame_grid(x0_videos[b, shown]), config.upscale)
                common.save_png(setup, case.id, "grid.png", grid)
                x0_frames = x0_videos[b, shown].reshape(-1, *final.shape[2:])
                common.save_mp4(setup, case.id, "x0.mp4", x0_frames, 4)
                common.save_mp4(setup, case.id, "final.mp4", final[b], setup.subject.fps)
                setup.writer.image(f"trajectory/{case.group}/{case.id}", grid, index[case.id])
                setup.writer.video(f"final/{case.group}/{case.id}", final[b], index[case.id])
            if case.id in labelled and setup.folder.writes:
                title = f"x0-hat of {case.id} ({case.split}) at every shown step"
                fig = plots.step_frame_grid_figure(x0_videos[b, shown], shown, sigmas[shown], title)
                tag = f"trajectory_labelled/{case.group}/{case.id}"
                plots.save(fig, setup.folder.artifact(case.id, "grid_labelled.png"), setup.writer, tag)
            record = {
                **common.case_fields(case),
                "final_score": final_score,
                "x0_scores": scores,
                "solved_by_step": [None if s is None else s >= config.success for s in scores],
                "commit_step": commit_step(scores, config.success),
                "moves": getattr(case.source, "solution", {}).get("moves"),
            }
            if is_multi_answer(case) and final_score is not None:
                record["multi"] = trajectory_measures(
                    x0_videos[b], case.source, scores, config.success, config.thresholds
                )
                record["final_candidates"] = candidates_present(final[b], case.source)
            records.append(record)
        return records

    return common.run_and_finish(setup, compute, lambda: finish(setup, config, steps), progress, stop_after)


def finish(setup, config: Config, steps: int) -> dict:
    rows = setup.folder.records(c.id for c in setup.cases)
    summary: dict = {"final_score": common.group_means(rows, "final_score"), "x0_score_by_step": {}}
    for s in range(steps):
        for r in rows:
            r[f"x0_score_{s}"] = r["x0_scores"][s]
        summary["x0_score_by_step"][s] = common.group_means(rows, f"x0_score_{s}")
        for name, value in summary["x0_score_by_step"][s].items():
            if value is not None:
                setup.writer.scalar(f"x0_score/{name}", value, s)
    commits = [r["commit_step"] for r in rows if r["commit_step"] is not None]
    summary["commit_step"] = {
        "solved": len(commits),
        "cases": len(rows),
        "median": float(np.median(commits)) if commits else None,
    }
    common.log_means(setup.writer, "final_score", summary["final_score"])
    summary["solved_by_step"] = {
        name: step_means(subset, lambda r: r["solved_by_step"]) for name, subset in subsets(rows).items()
    }
    summary["candidates"] = {name: candidate_summary(subset) for name, subset in subsets(rows).items()}
    for name, entry in summary["solved_by_step"].items():
        for s, value in enumerate(entry):
            if value is not None:
                setup.writer.scalar(f"solved/{name}", value, s)
    for name, entry in summary["candidates"].items():
        if entry["cases"]:
            for s, value in enumerate(entry["mean_by_step"]):
                setup.writer.scalar(f"candidates/{name}", value, s)
                setup.writer.scalar(f"candidates_two_or_more/{name}", entry["two_or_more_by_step"][s], s)
            for t, curve in entry["sweep"].items():
                for s, value in enumerate(curve):
                    setup.writer.scalar(f"candidates_at_{t}/{name}", value, s)
    summary["by_length"] = length_summary(rows, config.success)
    for group, lengths in summary["by_length"].items():
        for moves, entry in lengths.items():
            setup.writer.scalar(f"solved_by_length/{group}/final", entry["solved"], int(moves))
            setup.writer.scalar(f"solved_by_length/{group}/x0_step0", entry["x0_solved_step0"], int(moves))
    summary["figures"] = figures(setup, config, summary, steps)
    table = [
        [s, summary["x0_score_by_step"][s]["overall"]]
        for s in range(steps)
        if summary["x0_score_by_step"][s]["overall"] is not None
    ]
    summary["table"] = common.markdown_table(["step", "x0-hat score"], table)
    setup.writer.text("summary", summary["table"])
    setup.writer.close()
    setup.folder.write_results(summary, rows)
    return summary


def figures(setup, config: Config, summary: dict, steps: int) -> list[dict]:
    """The summary figures (written by `common.save_figure`) and the labelled grids: [{file, caption}]."""
    x = list(range(steps))
    groups = [n for n in summary["solved_by_step"] if n == "overall" or n.startswith("group/")]
    out = []
    score = {n: [summary["x0_score_by_step"][s][n] for s in x] for n in groups}
    fig = plots.curves_figure(
        x, score, "denoising step (0 = noisiest)", "x0-hat score (mean)", "Score of x0-hat vs step", (0, 1.05)
    )
    out.append(
        common.save_figure(
            setup,
            "score_vs_step",
            fig,
            "Mean task score of the x0-hat (the model's current guess of the final video) at each "
            "denoising step, per family: where it rises is where the answer appears.",
        )
    )
    solved = {n: summary["solved_by_step"][n] for n in groups}
    title = f"Solved share of x0-hat vs step (score >= {config.success:g})"
    fig = plots.curves_figure(x, solved, "denoising step (0 = noisiest)", "solved share", title, (0, 1.05))
    out.append(
        common.save_figure(
            setup,
            "solved_vs_step",
            fig,
            f"Share of cases whose x0-hat at each step already scores >= {config.success:g}, per family.",
        )
    )
    multi = summary["candidates"]["overall"]
    if multi["cases"]:
        curves = {f"threshold {t}": curve for t, curve in multi["sweep"].items()}
        curves[f"share with >= 2 (threshold {multi['threshold']:g})"] = multi["two_or_more_by_step"]
        title = f"Valid answers present in x0-hat vs step (multi-answer cases: {multi['cases']})"
        ylabel = "candidates (mean) or share of cases"
        fig = plots.curves_figure(x, curves, "denoising step (0 = noisiest)", ylabel, title)
        out.append(
            common.save_figure(
                setup,
                "candidates_vs_step",
                fig,
                "Mean number of valid answers drawn in the x0-hat of each step on multi-answer cases, "
                "at several presence thresholds: several early and one late means the model explores "
                "and then prunes.",
            )
        )
    if summary["by_length"]:
        out.append(length_figure(setup, config, summary["by_length"]))
    for case_id in labelled_ids(setup.cases, config.labelled_grids):
        case = setup.by_id[case_id]
        out.append(
            {
                "file": f"cases/{case_id}/grid_labelled.png",
                "caption": f"The x0-hat of one {case.group} case ({case.split}) decoded at each step "
                "(rows: step index and noise level sigma) and frame (columns).",
            }
        )
    return out


def length_figure(setup, config: Config, by_length: dict) -> dict:
    """Final vs step-0 x0-hat solved share against path length (`length_summary`), per group."""
    seen = {int(m) for entry in by_length.values() for m in entry}
    lengths = list(range(min(seen), max(seen) + 1))  # unmeasured lengths break the lines
    curves = {}
    for group, entry in by_length.items():
        for key, label in (("solved", "final video"), ("x0_solved_step0", "x0-hat at step 0")):
            curves[f"{group}: {label}"] = [entry.get(str(m), {}).get(key) for m in lengths]
    title = f"Solved share (score >= {config.success:g}) vs path length: final vs step-0 x0-hat"
    fig = plots.curves_figure(lengths, curves, "path length (moves)", "solved share", title, (0, 1.05))
    return common.save_figure(
        setup,
        "solved_vs_length",
        fig,
        "Solved share of the final video and of the step-0 x0-hat (one forward pass) against the "
        "path length, per maze family, both splits: where the two part is where the denoising "
        "steps add to what one pass computes.",
    )
