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
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np

from cosjax.analysis.images import step_frame_grid, upscale
from cosjax.transforms import trace_x0
from experiments import common

NAME = "trajectory"


@dataclasses.dataclass(frozen=True)
class Config(common.BaseConfig):
    """Attributes (besides `common.BaseConfig`):
    show_steps: steps drawn in the grid and x0.mp4 (None = all); scores use every step.
    success: score threshold of a solved case.
    upscale: nearest-neighbour magnification of the toy's 32-pixel frames in images.
    """

    cases: int | None = 2
    show_steps: tuple[int, ...] | None = None
    success: float = 0.5
    upscale: int = 4

    def validate(self, subject, settings) -> None:
        super().validate(subject, settings)
        common.check_indices("show_steps", self.show_steps, settings.steps, "steps", "every step")
        common.check_number("success", self.success, 0.0, 1.0, optional=False)
        common.check_int("upscale", self.upscale, 1, 64)


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
            grid = upscale(step_frame_grid(x0_videos[b, shown]), config.upscale)
            common.save_png(setup, case.id, "grid.png", grid)
            common.save_mp4(setup, case.id, "x0.mp4", x0_videos[b, shown].reshape(-1, *final.shape[2:]), 4)
            common.save_mp4(setup, case.id, "final.mp4", final[b], setup.subject.fps)
            setup.writer.image(f"trajectory/{case.group}/{case.id}", grid, index[case.id])
            setup.writer.video(f"final/{case.group}/{case.id}", final[b], index[case.id])
            records.append(
                {
                    **common.case_fields(case),
                    "final_score": final_score,
                    "x0_scores": scores,
                    "commit_step": commit_step(scores, config.success),
                }
            )
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
