"""The embedded toy model shipped in the package: it loads by default and reproduces its reference check."""

from __future__ import annotations

import jax
import numpy as np

from cosjax.data.prompts import PROMPTS
from cosjax.data.tasks import FAMILIES
from cosjax.subjects import EMBEDDED_MODEL, ToySubject
from cosjax.toy.reference import REFERENCE_CASES, reference_check


def test_embedded_model_is_small_and_loads_by_default():
    size = sum(p.stat().st_size for p in EMBEDDED_MODEL.iterdir())
    assert size < 16 * 2**20, f"embedded model is {size / 2**20:.1f} MiB"
    subject = ToySubject()
    assert subject.path == EMBEDDED_MODEL and subject.space == "delta"
    assert (subject.pool, subject.stride, subject.scale) == (2, 4, 4.0)
    assert subject.table.shape[0] == len(PROMPTS)  # one embedding per prompt of cosjax.data.prompts
    n = sum(int(np.prod(a.shape)) for a in jax.tree.leaves(subject.dit.params))
    assert n > 100_000


def test_embedded_model_reproduces_its_reference_check():
    """The fixed cases (16 per family) give the recorded solved count (margin 3 cases of 64), mean
    score (margin 0.03), last-frame error (margin 5%) and, per family, every recorded phenomena count
    (margin 2 of 16): other CPUs / XLA versions may round borderline pixels differently and flip a
    borderline case; broken or different weights move these by far more."""
    subject = ToySubject()
    recorded = subject.meta["reference_check"]
    got = reference_check(subject, recorded["settings"])
    assert got["of"] == recorded["of"] == REFERENCE_CASES["per_family"] * len(FAMILIES)
    assert recorded["solved"] >= 2 * recorded["of"] // 3  # the shipped model solves a clear majority
    assert abs(got["solved"] - recorded["solved"]) <= 3
    assert abs(got["mean_score"] - recorded["mean_score"]) <= 0.03
    assert abs(got["last_frame_mae"] - recorded["last_frame_mae"]) <= 0.05 * recorded["last_frame_mae"]
    assert set(got["phenomena"]) == set(recorded["phenomena"]) == set(FAMILIES)
    for family, counts in recorded["phenomena"].items():
        assert set(got["phenomena"][family]) == set(counts), family
        for name, value in counts.items():
            assert abs(got["phenomena"][family][name] - value) <= 2, (family, name, got["phenomena"][family])


def test_recorded_figures_show_several_answers_at_step_0_on_maze_routes():
    """The record the test above re-measures: on the multi-answer family the step-0 x0-hat holds
    >= 2 valid routes in most cases, most solved cases commit to their route after step 0, and
    almost every final video holds exactly one route (issue 14's targets: >= 50%, -, >= 90%); on
    move and pattern, step 0 is already solved (one pass). The step-0 x0-hat itself may already be
    solved: trained at change weight 1 at the end, the model often shows one route brighter than
    the others from step 0 (9 of 16 recorded cases), which the score reads as solved."""
    recorded = ToySubject().meta["reference_check"]["phenomena"]
    routes = recorded["maze_routes"]
    assert routes["two_or_more_step0"] >= routes["cases"] // 2
    assert routes["commit_after_0"] >= routes["solved"] // 2
    assert routes["final_exactly_one"] >= routes["cases"] * 0.8
    for family in ("move", "pattern"):
        assert recorded[family]["x0_solved_step0"] >= recorded[family]["solved"] - 2


def test_recorded_figures_show_the_hard_family_solved_along_the_steps():
    """On `maze_long` (12-24 moves) one forward pass is not enough: the step-0 x0-hat solves fewer of
    the recorded cases than the final video, and most solved cases commit after step 0 (issue 14:
    step-0 share at most half the final's, median commit step after 0). A model that decides the
    path in one pass, as the earlier shipped one on 6-16 moves (13 of 16 solved at step 0 and at
    the end, 3 committing later), fails both."""
    long = ToySubject().meta["reference_check"]["phenomena"]["maze_long"]
    assert long["x0_solved_step0"] < long["solved"]
    assert long["commit_after_0"] > long["solved"] // 2
