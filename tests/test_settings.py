"""Bad experiment settings are refused before anything is written (issue 13 item 3).

Every row runs the real CLI in-process on the embedded toy model (4 layers, `STEPS` steps by default):
the bad setting exits 2 with a message naming the setting, its valid range and a fix, `--out` stays
absent (or byte-for-byte unchanged), and the fix the message suggests then claims the same `--out`.
"""

from __future__ import annotations

import json
import re

import pytest

import experiments
from cosjax.cli import main
from cosjax.subjects import EMBEDDED_MODEL
from experiments.common import parse_overrides

STEPS = json.loads((EMBEDDED_MODEL / "toy.json").read_text())["sampling"]["steps"]  # the preset's
LAST = STEPS - 1

# (experiment, bad setting, text the message must hold: the valid range)
BAD = [
    ("layer-energy", "layers=99", "layers must be distinct indices in 0..3 (the run has 4 layers)"),
    ("layer-energy", "layers=-1", "in 0..3"),
    ("layer-energy", "layers=1,1", "distinct indices"),
    ("layer-energy", f"energy_steps={STEPS}", f"in 0..{LAST} (the run has {STEPS} steps)"),
    ("layer-energy", "panel_scale=0", "integer in 1..64"),
    ("layer-energy", "steps=0", "steps must be an integer >= 1"),
    ("layer-energy", "batch_size=0", "batch_size must be an integer >= 1"),
    ("layer-energy", "batch_size=-1", "batch_size must be an integer >= 1"),
    ("layer-energy", "solver=bogus", "solver must be one of euler, unipc"),
    ("layer-energy", "cases=0", "cases must be an integer >= 1"),
    ("layer-energy", "cases=none", "cases must be an integer >= 1"),
    ("layer-energy", "shift=0", "shift must be a finite number > 0"),
    ("layer-energy", "guide_scale=-2", "guide_scale must be a finite number >= 0"),
    ("layer-energy", "guide_scale=nan", "finite number"),
    ("layer-energy", "seed=-1", "seed must be an integer in 0..2147483647"),
    ("layer-energy", "seed0=-5", "seed0 must be an integer in 0..2147483647"),
    ("trajectory", f"show_steps=0,{STEPS}", f"show_steps must be distinct indices in 0..{LAST}"),
    ("trajectory", "show_steps=", "show_steps must be distinct indices"),
    ("trajectory", "success=2", "success must be a finite number >= 0 and <= 1"),
    ("trajectory", "upscale=0", "upscale must be an integer in 1..64"),
    ("noise-perturbation", "frame_steps=99", f"frame_steps must be distinct indices in 0..{LAST}"),
    ("information-flow", f"perturb_steps={STEPS}", f"perturb_steps must be distinct indices in 0..{LAST}"),
    ("information-flow", "representation=hidden:4", "'hidden:K' with K in 0..3 (the model has 4 layers)"),
    ("information-flow", "representation=energy", "'x0' or 'hidden:K'"),
    ("latent-swap", "layers=4", "layers must be distinct indices in 0..3"),
    ("latent-swap", "swap_steps=-1", f"swap_steps must be distinct indices in 0..{LAST}"),
    ("ensemble", "seeds=0", "seeds must be an integer in 1..64"),
    ("ensemble", "merge_steps=99", f"merge_steps must be distinct indices in 0..{LAST}"),
    ("ensemble", "merge_steps=", "merge_steps must be distinct indices"),
    ("ensemble", "score_seed=3", "score_seed must be an integer in 0..2"),
    ("ensemble", "layers=9", "layers must be distinct indices in 0..3"),
]


def _snapshot(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize(("name", "bad", "valid"), BAD, ids=[f"{n}:{b}" for n, b, _ in BAD])
def test_bad_setting_leaves_out_absent_and_its_fix_runs(name, bad, valid, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["run", name, "--out", str(out), "--quiet", "--data", "toy:move", bad]) == 2
    err = capsys.readouterr().err
    setting = bad.partition("=")[0]
    assert f"setting {bad}" in err or f"setting {setting}=" in err, err
    assert valid in err, err
    fix = re.search(r"rerun with e\.g\. (\S+)$", err.strip())
    assert fix and fix.group(1).startswith(f"{setting}="), err
    assert not out.exists()
    # the suggested fix claims the same folder (stop_after=0: validated and stored, nothing sampled)
    module = experiments.get(name)
    config = module.Config(**parse_overrides(module.Config, [fix.group(1)]), data="toy:move")
    module.run(config, out=out, progress=False, stop_after=0)
    assert (out / "config.json").is_file()


def test_exact_message_and_corrected_command_runs_into_the_same_out(tmp_path, capsys):
    out = tmp_path / "runs" / "layer-energy"
    args = ["run", "layer-energy", "--out", str(out), "--quiet", "--data", "toy:move", "cases=1", "steps=2"]
    assert main([*args, "layers=99"]) == 2
    assert capsys.readouterr().err.strip() == (
        "cosjax run: error: setting layers=99 is not valid: layers must be distinct indices in 0..3 "
        "(the run has 4 layers), or none (every layer); rerun with e.g. layers=0,1,2"
    )
    assert main([*args, "batch_size=-1"]) == 2
    assert capsys.readouterr().err.strip() == (
        "cosjax run: error: setting batch_size=-1 is not valid: batch_size must be an integer >= 1; "
        "rerun with e.g. batch_size=1"
    )
    assert not out.exists()
    assert main([*args, "layers=0,3"]) == 0
    assert (out / "results.json").is_file()
    # a bad setting given to the finished folder leaves every byte of it as it was
    before = _snapshot(out)
    assert main([*args, "layers=0,3", "energy_steps=2"]) == 2
    assert "energy_steps must be distinct indices in 0..1 (the run has 2 steps)" in capsys.readouterr().err
    assert _snapshot(out) == before


def test_ensemble_seeds_zero_blames_seeds_not_score_seed(tmp_path, capsys):
    assert main(["run", "ensemble", "--out", str(tmp_path / "e"), "seeds=0"]) == 2
    err = capsys.readouterr().err
    assert "setting seeds=0" in err and "score_seed" not in err
