"""Noise at a step vs noise at a frame (Fig. 3): which hurts the answer more?

    cosjax run noise-perturbation                          # embedded model, 8 cases per toy family
    cosjax run noise-perturbation --data toy:move cases=32 frame_steps=0,1,2,3
    cosjax run noise-perturbation --model ckpt/vbvr-wan2.2 --data vbvr-bench:VBVR-Bench-Data cases=1

For every case: one clean run, then one run per denoising step s with `noise_at_step(s)` and one
run per latent frame f with `noise_at_frame(f)`, all from the clean run's initial noise.

Protocol choices (the paper leaves them open, see paper-and-vbvr.md 1.4):
  * noise at step s: the latents (all frames) are *replaced* by fresh N(0, I) right before the
    model call of step s (the conditioning is kept). The trajectory up to s is thrown away, so the
    drop measures how much of the answer the remaining steps can no longer rebuild.
  * noise at frame f: latent frame f is replaced by fresh N(0, I) before the model call of every
    step in `frame_steps` (None = every step), the other frames untouched.
  * the fresh noise comes from the batch key, the same for every perturbation of a case.
Outcome measures per run: the task score of the final video (where the subject has a scorer) and
the final-frame agreement with the clean run, 1 - mean |last - clean last| / 255 (always). Curves:
mean score drop (clean - perturbed) per step and per frame; TensorBoard scalars `drop_step/*`
(x axis = step) and `drop_frame/*` (x axis = frame). Reading the frame curve: the toy scorers read
the last frame, so noise on the last latent frame destroys the scored output by construction; the
informative entries are the other frames (does the answer depend on them?). The same compiled
program serves every step and every frame (the index is a traced argument).
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np

from cosjax.transforms import noise_at_frame, noise_at_step
from experiments import common

NAME = "noise-perturbation"


@dataclasses.dataclass(frozen=True)
class Config(common.BaseConfig):
    """Attributes (besides `common.BaseConfig`):
    frame_steps: steps at which noise-at-frame replaces the frame (None = every step).
    """

    frame_steps: tuple[int, ...] | None = None

    def validate(self, subject, settings) -> None:
        super().validate(subject, settings)
        common.check_indices("frame_steps", self.frame_steps, settings.steps, "steps", "every step")


def run(config: Config = Config(), model=None, out=None, progress=True, stop_after=None) -> dict:
    setup = common.prepare(NAME, config, model, out)
    base = setup.sampler()
    steps = setup.settings.steps
    clean = jax.jit(base)
    at_step = jax.jit(lambda cond, key, s: noise_at_step(base, s)(cond, key))
    at_frame = jax.jit(lambda cond, key, f: noise_at_frame(base, f, config.frame_steps)(cond, key))

    def compute(ids):
        cases = [setup.by_id[i] for i in ids]
        cond, key = common.condition(setup, cases), common.batch_key(setup, cases)
        frames = cond.latent_shape[2]
        decode = lambda r: setup.subject.decode(r.latents, cases)  # noqa: E731
        ref = decode(clean(cond, key))
        ref_scores = common.score_videos(setup, cases, ref)
        step_videos = [decode(at_step(cond, key, s)) for s in range(steps)]
        frame_videos = [decode(at_frame(cond, key, f)) for f in range(frames)]
        step_agree = np.stack([common.frame_agreement(v, ref) for v in step_videos], axis=1)  # [B, S]
        frame_agree = np.stack([common.frame_agreement(v, ref) for v in frame_videos], axis=1)  # [B, T]
        records = []
        for b, case in enumerate(cases):
            records.append(
                {
                    **common.case_fields(case),
                    "clean_score": ref_scores[b],
                    "step_scores": [setup.subject.score(case, v[b]) for v in step_videos],
                    "frame_scores": [setup.subject.score(case, v[b]) for v in frame_videos],
                    "step_agreement": step_agree[b].tolist(),
                    "frame_agreement": frame_agree[b].tolist(),
                }
            )
        return records

    return common.run_and_finish(setup, compute, lambda: finish(setup), progress, stop_after)


def _drops(rows, field: str) -> list[float | None]:
    """Mean over cases of clean_score - perturbed score, per index (None without scores)."""
    n = len(rows[0][field])
    out = []
    for i in range(n):
        pairs = [(r["clean_score"], r[field][i]) for r in rows if r["clean_score"] is not None]
        pairs = [(a, b) for a, b in pairs if b is not None]
        out.append(float(np.mean([a - b for a, b in pairs])) if pairs else None)
    return out


def finish(setup) -> dict:
    rows = setup.folder.records(c.id for c in setup.cases)
    summary: dict = {"clean_score": common.group_means(rows, "clean_score"), "by_split": {}}
    subsets = {"overall": rows}
    for split in sorted({r["split"] for r in rows}):
        subsets[split] = [r for r in rows if r["split"] == split]
    for group in sorted({r["group"] for r in rows}):
        subsets[group] = [r for r in rows if r["group"] == group]
    for name, subset in subsets.items():
        entry = {
            "drop_step": _drops(subset, "step_scores"),
            "drop_frame": _drops(subset, "frame_scores"),
            "agreement_step": np.mean([r["step_agreement"] for r in subset], axis=0).tolist(),
            "agreement_frame": np.mean([r["frame_agreement"] for r in subset], axis=0).tolist(),
        }
        summary["by_split"][name] = entry
        for field, values in entry.items():
            for i, v in enumerate(values):
                if v is not None:
                    setup.writer.scalar(f"{field}/{name}", v, i)
    overall = summary["by_split"]["overall"]
    table = [
        ["step", s, overall["drop_step"][s], overall["agreement_step"][s]]
        for s in range(len(overall["drop_step"]))
    ]
    table += [
        ["frame", f, overall["drop_frame"][f], overall["agreement_frame"][f]]
        for f in range(len(overall["drop_frame"]))
    ]
    summary["table"] = common.markdown_table(
        ["noise at", "index", "score drop", "agreement with clean"], table
    )
    setup.writer.text("summary", summary["table"])
    common.log_means(setup.writer, "clean_score", summary["clean_score"])
    setup.writer.close()
    setup.folder.write_results(summary, rows)
    return summary
