"""The reference check a toy model folder records: how many fixed cases it solves with its preset,
and the phenomena figures of its trajectories on the same cases.

`experiments/toy_preset.py --write` measures it once and stores it as toy.json's `reference_check`;
`tests/test_embedded.py` re-measures the embedded model against that record (broken or different
weights move the solved counts and the scores by far more than the margins allow).

Phenomena figures (`phenomena`, per family, counts over its `per_family` cases): "solved" (final
video, score >= SUCCESS), "x0_solved_step0" (the x0-hat of step 0 already solved), "commit_after_0"
(solved cases whose `cosjax.analysis.phenomena.commit_step` lies after step 0); on multi-answer
cases also "two_or_more_step0" (>= 2 valid answers present in the x0-hat of step 0 at the default
presence threshold) and "final_exactly_one" (the final video holds exactly one answer).
"""

from __future__ import annotations

import jax
import numpy as np

from cosjax.analysis.phenomena import candidates_present, commit_step, trajectory_measures
from cosjax.data.tasks import FAMILIES, generate
from cosjax.subjects import CaseRef, ToySubject
from cosjax.transforms import trace_x0

# disjoint from the training seeds 0..39999, the preset sweep's 50000+ and the experiments' 100000+
REFERENCE_CASES = {"seed0": 70000, "per_family": 16}
SUCCESS = 0.5  # a case is solved when its family's score is at least this


def evaluate(subject: ToySubject, cases, settings: dict, key_seed: int = 0, batch: int = 32):
    """(scores, last-frame MAEs / 255) of `cosjax.data` cases with `settings` (one key per batch)."""
    scores, maes = [], []
    for ref, video, _ in _runs(subject, cases, settings, key_seed, batch, trace=False):
        scores.append(subject.score(ref, video))
        maes.append(float(np.abs(video[-1].astype(np.float32) - ref.source.video[-1]).mean()))
    return scores, maes


def _runs(subject: ToySubject, cases, settings: dict, key_seed: int, batch: int, trace: bool):
    """Yields (CaseRef, final video uint8 [F, H, W, 3], x0-hat videos [S, F, H, W, 3] or None) per case."""
    sampler = subject.sampler(**settings)
    sample = jax.jit(trace_x0(sampler) if trace else sampler)
    resolved = subject.settings(**settings)
    refs = [CaseRef(f"{c.family}-{c.seed}", c.family, "in_domain", c.family, c) for c in cases]
    for start in range(0, len(refs), batch):
        chunk = refs[start : start + batch]
        cond = subject.condition(chunk, resolved)
        result = sample(cond, jax.random.fold_in(jax.random.key(key_seed), start))
        videos = subject.decode(result.latents, chunk)
        x0 = None
        if trace:
            steps = np.asarray(result.trace.x0)  # [S, B, C, T, H, W]
            x0 = np.stack([subject.decode(step, chunk) for step in steps], axis=1)  # [B, S, F, H, W, 3]
        for b, ref in enumerate(chunk):
            yield ref, videos[b], None if x0 is None else x0[b]


def phenomena(subject: ToySubject, cases, settings: dict, key_seed: int = 0, batch: int = 32) -> dict:
    """{family: counts} of the module docstring's phenomena figures over `cases`."""
    out: dict[str, dict[str, int]] = {}
    for ref, video, x0 in _runs(subject, cases, settings, key_seed, batch, trace=True):
        case = ref.source
        counts = out.setdefault(
            case.family, {"cases": 0, "solved": 0, "x0_solved_step0": 0, "commit_after_0": 0}
        )
        scores = [subject.score(ref, x0[s]) for s in range(x0.shape[0])]
        if "answer_boxes" in case.solution:  # with the answer each step shows (several may be valid)
            measures = trajectory_measures(x0, case, scores, SUCCESS, thresholds=())
            commit = measures["commit_step"]
        else:
            commit = commit_step(np.asarray(scores) >= SUCCESS)
        solved = subject.score(ref, video) >= SUCCESS
        counts["cases"] += 1
        counts["solved"] += int(solved)
        counts["x0_solved_step0"] += int(scores[0] >= SUCCESS)
        counts["commit_after_0"] += int(solved and commit > 0)
        if len(case.solution.get("answer_boxes", [])) >= 2:
            counts["two_or_more_step0"] = counts.get("two_or_more_step0", 0) + int(
                measures["candidates"][0] >= 2
            )
            final_one = candidates_present(video, case) == 1
            counts["final_exactly_one"] = counts.get("final_exactly_one", 0) + int(final_one)
    return out


def reference_cases():
    """The `REFERENCE_CASES`: `per_family` in-domain cases of every family, seeds seed0, seed0 + 1, ..."""
    n, seed0 = REFERENCE_CASES["per_family"], REFERENCE_CASES["seed0"]
    return [generate(name, seed0 + i) for name in sorted(FAMILIES) for i in range(n)]


def reference_check(subject: ToySubject, settings: dict) -> dict:
    """Solved count, mean score and mean last-frame error on `REFERENCE_CASES` with `settings`, and
    the per-family phenomena figures on the same cases."""
    cases = reference_cases()
    scores, maes = evaluate(subject, cases, settings)
    return {
        **REFERENCE_CASES,
        "settings": settings,
        "solved": int(sum(x >= SUCCESS for x in scores)),
        "of": len(scores),
        "success": SUCCESS,
        "mean_score": float(np.mean(scores)),
        "last_frame_mae": float(np.mean(maes)),
        "phenomena": phenomena(subject, cases, settings),
    }
