"""Summaries over case records of the phenomena measures: per-step means, candidate counts, gains.

Pure functions of the JSON-able case records the experiments write (dicts with "group" and "split"
and the measure's fields); every result is JSON-able. Subsets are named as the experiments' other
tables name them: "overall", "split/NAME", "group/NAME" and, with `crossed`, "GROUP@SPLIT".
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from cosjax.analysis.phenomena import THRESHOLD, paired_bootstrap_gain

BOOTSTRAP_RESAMPLES = 10000
BOOTSTRAP_SEED = 0


def subsets(rows: Sequence[dict], crossed: bool = False) -> dict[str, list[dict]]:
    """{subset name: its rows}: overall, per split, per group, and (crossed) per group and split."""
    out = {"overall": list(rows)}
    for key in ("split", "group"):
        for value in sorted({r[key] for r in rows}):
            out[f"{key}/{value}"] = [r for r in rows if r[key] == value]
    if crossed:
        for group in sorted({r["group"] for r in rows}):
            for split in sorted({r["split"] for r in rows}):
                chosen = [r for r in rows if r["group"] == group and r["split"] == split]
                if chosen:
                    out[f"{group}@{split}"] = chosen
    return out


def step_means(rows: Sequence[dict], values: Callable[[dict], Sequence | None]) -> list[float | None]:
    """float [S]: per step, the mean over rows of values(row)[s] (rows giving None or a None entry
    skipped; None where no row has a value)."""
    series = [v for v in (values(r) for r in rows) if v is not None]
    if not series:
        return []
    out = []
    for s in range(max(len(v) for v in series)):
        got = [float(v[s]) for v in series if s < len(v) and v[s] is not None]
        out.append(float(np.mean(got)) if got else None)
    return out


def candidate_summary(rows: Sequence[dict]) -> dict:
    """Candidates per step over multi-answer case records.

    rows: records holding "multi" (`cosjax.analysis.phenomena.trajectory_measures` of the case:
    "candidates" int [S] at THRESHOLD, "sweep" {threshold: int [S]}, "commit_step" (S = never)) and
    "final_candidates" (candidates present in the final video at THRESHOLD). Returns "cases",
    "threshold", "mean_by_step" [S], "two_or_more_by_step" [S] (share of cases with >= 2 candidates),
    "sweep" {threshold: mean [S]}, "final_exactly_one" (share of final videos holding exactly one
    answer), "commit_step" {"median", "at_step_0" share, "never" count} (the median counts a case that
    never commits as S, after every step).
    """
    multi = [r for r in rows if r.get("multi") is not None]
    if not multi:
        return {"cases": 0}
    counts = np.asarray([r["multi"]["candidates"] for r in multi], np.float64)  # [C, S]
    steps = counts.shape[1]
    commits = np.asarray([r["multi"]["commit_step"] for r in multi])
    sweep = {
        str(t): np.asarray([r["multi"]["sweep"][t] for r in multi], np.float64).mean(0).tolist()
        for t in multi[0]["multi"]["sweep"]
    }
    return {
        "cases": len(multi),
        "threshold": THRESHOLD,
        "mean_by_step": counts.mean(0).tolist(),
        "two_or_more_by_step": (counts >= 2).mean(0).tolist(),
        "sweep": sweep,
        "final_exactly_one": float(np.mean([r["final_candidates"] == 1 for r in multi])),
        "commit_step": {
            "median": float(np.median(commits)),
            "at_step_0": float(np.mean(commits == 0)),
            "never": int(np.sum(commits >= steps)),
        },
    }


def gains(rows: Sequence[dict], plain: str, ensemble: str, level: float = 0.95) -> dict[str, dict]:
    """{subset (crossed): {"mean", "low", "high", "cases"}}: the mean of row[ensemble] - row[plain]
    over the subset's cases with its `level` paired bootstrap interval (`paired_bootstrap_gain`,
    BOOTSTRAP_RESAMPLES resamples, seed BOOTSTRAP_SEED); rows with a None in either field skipped."""
    out = {}
    for name, subset in subsets(rows, crossed=True).items():
        pairs = [(r[plain], r[ensemble]) for r in subset if r[plain] is not None and r[ensemble] is not None]
        if not pairs:
            continue
        a, b = zip(*pairs, strict=True)
        gain = paired_bootstrap_gain(a, b, BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED, level)
        out[name] = gain._asdict()
    return out


def length_summary(rows: Sequence[dict], success: float) -> dict[str, dict[str, dict]]:
    """Step-0 vs final solved share per group and path length: where one pass stops sufficing.

    rows: trajectory records holding "moves" (a case's path length, the toy maze families), "split",
    "final_score" and "x0_scores" [S] (None entries: no scorer) and "commit_step" (None = the final
    x0-hat fails). Returns {group: {str(moves): {"cases", "solved" (share of final videos scoring >=
    success), "x0_solved_step0" (share of step-0 x0-hats scoring >= success), "median_commit" (over
    the cases with a commit step; None without), "splits" (the splits these cases come from)}}},
    lengths in increasing order (results.json sorts the keys as strings); groups whose records have
    no "moves" are left out.
    """
    out: dict[str, dict[str, dict]] = {}
    scored = [r for r in rows if r.get("moves") is not None and r["final_score"] is not None]
    for group in sorted({r["group"] for r in scored}):
        mine = [r for r in scored if r["group"] == group]
        out[group] = {}
        for moves in sorted({r["moves"] for r in mine}):
            chosen = [r for r in mine if r["moves"] == moves]
            commits = [r["commit_step"] for r in chosen if r["commit_step"] is not None]
            out[group][str(moves)] = {
                "cases": len(chosen),
                "solved": float(np.mean([r["final_score"] >= success for r in chosen])),
                "x0_solved_step0": float(np.mean([r["x0_scores"][0] >= success for r in chosen])),
                "median_commit": float(np.median(commits)) if commits else None,
                "splits": sorted({r["split"] for r in chosen}),
            }
    return out
