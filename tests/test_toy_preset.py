"""The preset rule of `experiments/toy_preset.py`: cheapest within one standard error of the best."""

import json

from cosjax.data.tasks import FAMILIES
from cosjax.toy.model_file import EMBEDDED_MODEL, TOY_FILE
from experiments.toy_preset import best, passes


def _row(steps, shift, gs, solved, mean_score=0.8, mae=5.0):
    return {"steps": steps, "shift": shift, "guide_scale": gs, "solved": solved, "mean_score": mean_score,
            "last_frame_mae": mae}


def test_passes_count_guidance_twice():
    assert passes(_row(10, 4.0, 1.0, 0.5)) == 10
    assert passes(_row(40, 1.0, 3.0, 0.5)) == 80


def test_a_lead_inside_the_standard_error_goes_to_the_cheaper_preset():
    # 50 vs 48 of 64: the lead (0.031) is inside one SE of 0.781 (0.052), so 10 unguided steps win.
    rows = [_row(40, 1.0, 3.0, 50 / 64), _row(10, 4.0, 1.0, 48 / 64), _row(10, 1.0, 1.0, 47 / 64)]
    assert (best(rows, 64)["steps"], best(rows, 64)["shift"]) == (10, 4.0)


def test_a_lead_beyond_the_standard_error_wins():
    # 60 vs 48 of 64: the lead (0.19) is well beyond one SE (0.030), so the expensive preset wins.
    rows = [_row(40, 1.0, 3.0, 60 / 64), _row(10, 4.0, 1.0, 48 / 64)]
    assert best(rows, 64)["steps"] == 40
    # with many more cases the same 2-case-in-64 lead is significant
    rows = [_row(40, 1.0, 3.0, 0.781), _row(10, 4.0, 1.0, 0.750)]
    assert best(rows, 4096)["steps"] == 40


def test_equal_cost_ties_go_to_more_solved_then_mean_score():
    rows = [_row(10, 1.0, 1.0, 0.74), _row(10, 4.0, 1.0, 0.75)]
    assert best(rows, 64)["shift"] == 4.0
    rows = [_row(10, 1.0, 1.0, 0.75, mean_score=0.81), _row(10, 4.0, 1.0, 0.75, mean_score=0.79)]
    assert best(rows, 64)["shift"] == 1.0


def test_the_shipped_sweep_picks_the_shipped_preset():
    meta = json.loads((EMBEDDED_MODEL / TOY_FILE).read_text())
    sweep = meta["preset_sweep"]
    cases = sweep["validation_cases_per_family"] * len(FAMILIES)
    win = best(sweep["rows"], cases)
    assert {k: win[k] for k in ("steps", "shift", "guide_scale")} == {
        k: meta["sampling"][k] for k in ("steps", "shift", "guide_scale")
    }
