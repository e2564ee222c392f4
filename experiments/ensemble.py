"""The training-free ensemble (Table 1) against the plain sampler, scored per task.

    cosjax run ensemble                                    # embedded model, 8 cases per family and split
    cosjax run ensemble --data toy:@both cases=100 seeds=3
    cosjax run ensemble --model ckpt/vbvr-wan2.2 --data vbvr-bench:VBVR-Bench-Data evalkit=../VBVR-EvalKit

The ensemble (`cosjax.ensemble`) runs `seeds` trajectories whose residual streams at `layers`
(None = the middle layers [L/2, 3L/4), the paper's 20-29 of 40) are replaced by their mean across
seeds at `merge_steps` (default: step 0). Each seed then continues on its own; seed 0 starts from
the plain run's initial noise, so "plain" and "ensemble" differ only by the merge. The scored
ensemble video is seed 0's (`score_seed`).

Noise: both arms draw their initial noise from the batch key (the first case's key, see
`experiments.common.batch_key`), not per case, because the ensemble derives its other seeds from
the key.

Toy subject: videos are scored at once by the task scorers. VBVR-Bench: both arms' videos are written
in the EvalKit layout under `videos/plain/` and `videos/ensemble/`; with `evalkit=PATH` the EvalKit's
task-specific scoring runs on each and overall / in-domain / out-of-domain / per-category means
are logged (missing videos counted as failures, see `cosjax.evalkit.summarize`).
"""

from __future__ import annotations

import dataclasses

import jax

from cosjax.transforms import ensemble
from experiments import common


@dataclasses.dataclass(frozen=True)
class Config(common.BaseConfig):
    """Attributes (besides `common.BaseConfig`):
    seeds: ensemble size.
    layers: merged layers (None = the middle layers).
    merge_steps: steps at which the streams are merged.
    score_seed: which seed's video is scored as the ensemble's output.
    success: score threshold of a solved case.
    evalkit: VBVR-EvalKit folder (VBVR-Bench only).
    """

    data: str = "toy:@both"
    seeds: int = 3
    layers: tuple[int, ...] | None = None
    merge_steps: tuple[int, ...] = (0,)
    score_seed: int = 0
    success: float = 0.5
    evalkit: str | None = None


def run(config: Config = Config(), model=None, out=None, progress=True, stop_after=None) -> dict:
    setup = common.prepare("ensemble", config, model, out)
    if not 0 <= config.score_seed < config.seeds:
        raise ValueError(f"score_seed {config.score_seed} not in [0, {config.seeds})")
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

    done = common.run_cases_for(setup, compute, progress, stop_after)
    if not common.complete(setup):
        return {"computed": done}
    return finish(setup, config) | {"computed": done}


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
    else:
        summary = setup.subject.evaluate_arms(setup, config, rows)
    setup.writer.text("summary", summary.get("table", ""))
    setup.writer.close()
    setup.folder.write_results(summary, rows)
    return summary
