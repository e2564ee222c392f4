"""The reference check a toy model folder records: how many fixed cases it solves with its preset.

`experiments/toy_preset.py --write` measures it once and stores it as toy.json's `reference_check`;
`tests/test_embedded.py` re-measures the embedded model against that record (broken or different
weights move the solved count and the scores by far more than the margins allow).
"""

from __future__ import annotations

import jax
import numpy as np

from cosjax.data.tasks import FAMILIES, generate
from cosjax.subjects import CaseRef, ToySubject

# disjoint from the training seeds 0..39999, the preset sweep's 50000+ and the experiments' 100000+
REFERENCE_CASES = {"seed0": 70000, "per_family": 16}
SUCCESS = 0.5  # a case is solved when its family's score is at least this


def evaluate(subject: ToySubject, cases, settings: dict, key_seed: int = 0, batch: int = 32):
    """(scores, last-frame MAEs / 255) of `cosjax.data` cases with `settings` (one key per batch)."""
    sample = jax.jit(subject.sampler(**settings))
    resolved = subject.settings(**settings)
    refs = [CaseRef(f"{c.family}-{c.seed}", c.family, "in_domain", c.family, c) for c in cases]
    scores, maes = [], []
    for start in range(0, len(refs), batch):
        chunk = refs[start : start + batch]
        cond = subject.condition(chunk, resolved)
        latents = sample(cond, jax.random.fold_in(jax.random.key(key_seed), start)).latents
        for ref, video in zip(chunk, subject.decode(latents, chunk), strict=True):
            scores.append(subject.score(ref, video))
            maes.append(float(np.abs(video[-1].astype(np.float32) - ref.source.video[-1]).mean()))
    return scores, maes


def reference_cases():
    """The `REFERENCE_CASES`: `per_family` in-domain cases of every family, seeds seed0, seed0 + 1, ..."""
    n, seed0 = REFERENCE_CASES["per_family"], REFERENCE_CASES["seed0"]
    return [generate(name, seed0 + i) for name in sorted(FAMILIES) for i in range(n)]


def reference_check(subject: ToySubject, settings: dict) -> dict:
    """Solved count, mean score and mean last-frame error on `REFERENCE_CASES` with `settings`."""
    scores, maes = evaluate(subject, reference_cases(), settings)
    return {
        **REFERENCE_CASES,
        "settings": settings,
        "solved": int(sum(x >= SUCCESS for x in scores)),
        "of": len(scores),
        "success": SUCCESS,
        "mean_score": float(np.mean(scores)),
        "last_frame_mae": float(np.mean(maes)),
    }
