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
informative entries are the other frames (does the answer depend on them?). So every subset also
reports `scored_frame` (the latent frame the scored last frame is decoded from, `scored_frame`),
`drop_frame_scored` (the drop for noise there) apart from `drop_frame_other` (the mean drop over
the other latent frames, the frame measure the scorer does not confound), next to `drop_step_mean`
(the mean drop over the steps). The same compiled program serves every step and every frame (the
index is a traced argument). Figures in `plots/` (and TensorBoard `plots/*`): drop vs noised step,
drop vs noised frame with the scored frame marked.
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np

from cosjax.analysis import plots
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


def scored_frame(latent_frames: int) -> int:
    """The latent frame the scored video frame is decoded from: the last one.

    Every toy scorer reads the last video frame (`cosjax.data.render.last_frame`), as does the
    agreement measure here; the toy codec decodes the last video frame from the last latent keyframe
    alone (it round-trips exactly), and Wan's causal VAE packs the last 4 video frames into the last
    latent frame.
    """
    return latent_frames - 1


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
        for field, values in entry.items():
            for i, v in enumerate(values):
                if v is not None:
                    setup.writer.scalar(f"{field}/{name}", v, i)
        entry |= split_scored(entry)
        summary["by_split"][name] = entry
        for field in ("drop_frame_scored", "drop_frame_other", "drop_step_mean"):
            if entry[field] is not None:
                setup.writer.scalar(f"{field}/{name}", entry[field], 0)
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
    summary["figures"] = figures(setup, overall)
    setup.writer.text("summary", summary["table"])
    common.log_means(setup.writer, "clean_score", summary["clean_score"])
    setup.writer.close()
    setup.folder.write_results(summary, rows)
    return summary


def split_scored(entry: dict) -> dict:
    """The frame measure apart from the scored frame: "scored_frame", "drop_frame_scored" (the drop
    for noise at it), "drop_frame_other" (mean drop over the other frames), "drop_step_mean" (mean
    drop over the steps); None where there are no scores."""
    frame = scored_frame(len(entry["drop_frame"]))
    other = [v for f, v in enumerate(entry["drop_frame"]) if f != frame and v is not None]
    steps = [v for v in entry["drop_step"] if v is not None]
    return {
        "scored_frame": frame,
        "drop_frame_scored": entry["drop_frame"][frame],
        "drop_frame_other": float(np.mean(other)) if other else None,
        "drop_step_mean": float(np.mean(steps)) if steps else None,
    }


def _measure(entry: dict, kind: str) -> tuple[list, str]:
    """The score drop per index, or 1 - agreement with the clean run where there are no scores."""
    drops = entry[f"drop_{kind}"]
    if any(v is not None for v in drops):
        return drops, "score drop (clean - noised)"
    return [1.0 - a for a in entry[f"agreement_{kind}"]], "1 - last-frame agreement with clean"


def figures(setup, overall: dict) -> list[dict]:
    """Drop vs noised step and vs noised frame (the scored frame marked): [{file, caption}]."""
    step_drop, label = _measure(overall, "step")
    fig = plots.curves_figure(
        list(range(len(step_drop))),
        {"all cases": step_drop},
        "noised denoising step (latents replaced by fresh noise before it)",
        label,
        "Noise at a step: how much of the answer is lost",
    )
    out = [
        common.save_figure(
            setup,
            "drop_vs_step",
            fig,
            "Score lost when the latents are replaced by fresh noise right before each denoising step: "
            "a drop at late steps means the answer was settled earlier and cannot be rebuilt.",
        )
    ]
    frame_drop, label = _measure(overall, "frame")
    frame = overall["scored_frame"]
    fig = plots.bars_figure(
        [str(f) for f in range(len(frame_drop))],
        frame_drop,
        "noised latent frame (replaced by fresh noise at the noised steps)",
        label,
        "Noise at a frame: how much of the answer is lost",
        marked=[frame],
        mark_label="the frame the scorer reads",
    )
    out.append(
        common.save_figure(
            setup,
            "drop_vs_frame",
            fig,
            f"Score lost when one latent frame is replaced by noise; the hatched bar (frame {frame}) is "
            "the frame the scorer reads, lost by construction, so the other bars are the fair comparison "
            "with the step curve.",
        )
    )
    return out
