"""The `arrows` family (a chain of pointer hops): the path is the walk the pointers give, lengths per
split, pointers readable in pixels, the scorer on right, diverted, short and flooded answers.
(Determinism, layout and ground-truth scoring run in test_tasks.py over every family.)"""

from __future__ import annotations

from test_tasks import perturb, with_last

from cosjax import data as D
from cosjax.data import arrows, tasks
from cosjax.data.lattice import PATH
from cosjax.data.render import GREY


def cells(path):
    return [tuple(c) for c in path]


def test_registered_opt_in_with_its_own_prompt():
    assert "arrows" in tasks.OTHER_FAMILIES and "arrows" not in tasks.FAMILIES
    case = tasks.generate("arrows", 0)
    assert case.prompt == D.PROMPTS[case.prompt_id] and "pointer" in case.prompt
    assert tasks.family("arrows").prompt_ids == (case.prompt_id,)


def test_path_is_the_walk_the_pointers_give():
    for held_out, (lo, hi) in ((False, arrows.IN_DOMAIN_MOVES), (True, arrows.HELD_OUT_MOVES)):
        lengths = set()
        for seed in range(60):
            case = arrows.generate(seed, held_out)
            sol = case.solution
            path = cells(sol["path"])
            assert len(set(path)) == len(path) == sol["moves"] + 1  # self-avoiding
            assert all(abs(a[0] - b[0]) + abs(a[1] - b[1]) == 1 for a, b in zip(path, path[1:], strict=False))
            assert arrows.follow(sol["pointers"], path[0]) == path
            # every cell but the stop points at an in-board neighbour
            assert len(sol["pointers"]) == arrows.N**2 - 1
            assert f"{path[-1][0]},{path[-1][1]}" not in sol["pointers"]
            for key, (dr, dc) in sol["pointers"].items():
                r, c = map(int, key.split(","))
                assert abs(dr) + abs(dc) == 1 and 0 <= r + dr < arrows.N and 0 <= c + dc < arrows.N
            lengths.add(sol["moves"])
        assert lengths == set(range(lo, hi + 1))


def test_distractors_point_into_the_path():
    """Off-path cells that lead onto the path exist, so leading to the red cell does not mark a path
    cell: the path has to be walked from the start."""
    joining = 0
    for seed in range(40):
        sol = arrows.generate(seed).solution
        on = set(cells(sol["path"]))
        for key, (dr, dc) in sol["pointers"].items():
            r, c = map(int, key.split(","))
            joining += (r, c) not in on and (r + dr, c + dc) in on
    assert joining >= 40  # about 2 per case


def test_pointers_are_drawn_where_they_point():
    for seed in range(12):
        case = arrows.generate(seed)
        first = case.first_frame
        for key, step in case.solution["pointers"].items():
            cell = tuple(map(int, key.split(",")))
            y0, y1, x0, x1 = arrows.pointer_box(cell, tuple(step))
            assert (first[y0:y1, x0:x1] == GREY).all()
            opposite = arrows.pointer_box(cell, (-step[0], -step[1]))
            inside = first[opposite[0] : opposite[1], opposite[2] : opposite[3]]
            assert not (inside == GREY).all(-1).any()  # the other half is not grey
        # painting the path covers the pointers it passes, and only those
        last = case.final_frame
        for cell in cells(case.solution["path"])[1:-1]:
            step = case.solution["pointers"][f"{cell[0]},{cell[1]}"]
            y0, y1, x0, x1 = arrows.pointer_box(cell, tuple(step))
            assert (last[y0:y1, x0:x1] == PATH).all()


def _paint(frame, path):
    """frame with `path` (cells) painted as a band, the way the family draws it."""
    lat = arrows.LATTICE
    off, width = lat.band
    out = frame.copy()
    for a, b in zip(path, path[1:], strict=False):
        top, left = min(a[0], b[0]) * lat.pitch + off, min(a[1], b[1]) * lat.pitch + off
        bottom, right = max(a[0], b[0]) * lat.pitch + off + width, max(a[1], b[1]) * lat.pitch + off + width
        out[top:bottom, left:right] = PATH
    return out


def test_scorer_right_diverted_short_and_flooded():
    checked = 0
    for seed in range(24):
        case = arrows.generate(seed)
        path = cells(case.solution["path"])
        assert arrows.score(case, perturb(case.video, seed)) >= 0.99
        # the first k moves: 2k / (2 moves - 1) (k inner cells and k crossings of moves - 1 and moves)
        k, moves = len(path) // 2, len(path) - 1
        half = _paint(case.first_frame, path[: k + 1])
        assert abs(arrows.score(case, with_last(case, half)) - 2 * k / (2 * moves - 1)) < 1e-9
        # a wrong hop: leave the chain at its second cell for an off-path neighbour and stop there
        off = [nb for nb in arrows.LATTICE.neighbours(path[1]) if nb not in path]
        if off:
            diverted = _paint(case.first_frame, [path[0], path[1], off[0]])
            assert arrows.score(case, with_last(case, diverted)) == 0.0
            checked += 1
        # every cell and crossing painted: a flood is not a solution
        lat, flood = arrows.LATTICE, case.final_frame.copy()
        boxes = [lat.core_box((r, c)) for r in range(lat.n) for c in range(lat.n)]
        for y0, y1, x0, x1 in boxes + [lat.link_box(a, b) for a, b in lat.links()]:
            flood[y0:y1, x0:x1] = PATH
        assert arrows.score(case, with_last(case, flood)) == 0.0
    assert checked >= 12


def test_held_out_is_longer_than_any_training_chain():
    for seed in range(30):
        assert arrows.generate(seed, True).solution["moves"] > arrows.IN_DOMAIN_MOVES[1]
        assert arrows.generate(seed).solution["moves"] <= arrows.IN_DOMAIN_MOVES[1]


def test_a_toy_model_refuses_prompts_it_has_no_embedding_for():
    import dataclasses

    import pytest

    from cosjax.subjects import CaseRef, ToySubject

    subject = ToySubject(None)
    case = arrows.generate(0)
    unknown = dataclasses.replace(case, prompt_id=len(subject.table))
    ref = CaseRef("arrows-0", "arrows", "in_domain", "arrows", unknown)
    with pytest.raises(ValueError, match="not trained on these families"):
        subject.condition([ref], subject.settings())
