"""All six experiments with `cosjax run ... --mesh data=2,fsdp=2,context=2` on 8 fake CPU devices.

A tiny Wan2.2 I2V A14B-architecture repo (both experts, VAE, umT5 text encoder; Diffusers layout)
is converted in bfloat16; the bench is one task per split with two 9-frame samples each in the
published folder layout. `tests/mesh_run.py` runs every experiment on the mesh and on one device in
one 8-device process (the device count must be set before JAX starts) and reports placement and
traced dtypes.

Tolerance: the mesh run and the one-device run are the same bfloat16 program partitioned
differently. fsdp shards contraction dimensions, so partial products are rounded to bfloat16 before
their all-reduce, and the CFG combine multiplies cond - uncond differences by 5: each matmul may
differ by a few bfloat16 ulps (2^-8 relative) between the two. The records are derived from uint8
videos (agreements, distances in [0, 1] or in 0..255 units), float32 energies and CKA values; they
must agree within 0.02 absolute + 2% relative (`ATOL`, `RTOL`), which is several bfloat16 ulps of
the largest value and far below any effect an experiment measures (a perturbation changes these
values by O(0.1 - 1)); the videos written (H.264) within a mean of 2 of 255 levels. What was
measured is printed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
from helpers.bench import make_bench
from helpers.xla import device_env

import cosjax as cj

pytestmark = pytest.mark.filterwarnings("ignore:os.fork:RuntimeWarning")
SCRIPT = Path(__file__).parent / "mesh_run.py"
MESH = "data=2,fsdp=2,context=2"
EXPERIMENTS = (
    "trajectory", "noise-perturbation", "information-flow", "layer-energy", "latent-swap", "ensemble"
)
ATOL, RTOL = 0.02, 0.02


@pytest.fixture(scope="module")
def model(repo):
    return str(cj.convert_checkpoint(repo, repo.parent / "converted-bf16", dtype="bfloat16", progress=False))


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    """One task per split, two 9-frame 16x32 samples each (the latent swap's alternative is the other)."""
    tasks = {
        "In-Domain_50": ["G-3_stable_sort_data-generator"],
        "Out-of-Domain_50": ["O-39_maze_data-generator"],
    }
    root = tmp_path_factory.mktemp("bench") / "VBVR-Bench-Data"
    # 16x32 frames: 2 x 3 latent frames x 1 x 2 patches
    return make_bench(root, tasks=tasks, gt_frames=(9, 9), size=(16, 32))


@pytest.fixture(scope="module")
def report(model, bench, tmp_path_factory):
    out = tmp_path_factory.mktemp("mesh-runs")
    env = device_env(8)
    env["PYTHONPATH"] = os.pathsep.join([str(SCRIPT.parent.parent), env.get("PYTHONPATH", "")])
    # the two arms in parallel processes (each mostly compiles, single-threaded)
    procs = [
        subprocess.Popen(
            [sys.executable, str(SCRIPT), model, str(bench), str(out), spec],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for spec in (MESH, "none")
    ]
    outputs = [p.communicate(timeout=600) for p in procs]
    for p, (_, err) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, err[-4000:]
    return out, json.loads(outputs[0][0].strip().splitlines()[-1])


def _numbers(value, path=""):
    """(path, number) of every number in a record; other leaves as (path, value)."""
    if isinstance(value, dict):
        for k in sorted(value):
            yield from _numbers(value[k], f"{path}/{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _numbers(v, f"{path}[{i}]")
    else:
        yield path, value


def test_records_equal_the_one_device_run(report):
    out, _ = report
    worst = worst_video = 0.0
    for name in EXPERIMENTS:
        mesh = json.loads((out / "mesh" / name / "results.json").read_text())["cases"]
        single = json.loads((out / "single" / name / "results.json").read_text())["cases"]
        assert len(mesh) == len(single) >= 1, name
        for a, b in zip(mesh, single, strict=True):
            got, want = list(_numbers(a)), list(_numbers(b))
            assert [p for p, _ in got] == [p for p, _ in want], name
            for (path, x), (_, y) in zip(got, want, strict=True):
                if isinstance(y, float | int) and not isinstance(y, bool):
                    assert abs(x - y) <= ATOL + RTOL * abs(y), f"{name}{path}: mesh {x} vs one device {y}"
                    worst = max(worst, abs(x - y))
                elif isinstance(y, str) and "/single/" in y:  # video paths name their run folder
                    assert x == y.replace("/single/", "/mesh/"), f"{name}{path}"
                else:
                    assert x == y, f"{name}{path}"
        videos = sorted(p.relative_to(out / "mesh" / name) for p in (out / "mesh" / name).rglob("*.mp4"))
        assert videos == sorted(
            p.relative_to(out / "single" / name) for p in (out / "single" / name).rglob("*.mp4")
        )
        for video in videos:  # the written videos too: mean |difference| within 2 of 255 levels
            a, b = (iio.imread(out / arm / name / video).astype(np.float32) for arm in ("mesh", "single"))
            assert a.shape == b.shape and np.abs(a - b).mean() <= 2.0, f"{name}/{video}"
            worst_video = max(worst_video, float(np.abs(a - b).mean()))
    print(f"largest |mesh - one device|: record numbers {worst:.4g}, video mean {worst_video:.3g} levels")


def test_parameters_carry_the_planned_shardings(report):
    _, r = report
    assert r["mesh"] == {"data": 2, "fsdp": 2, "context": 2, "tensor": 1}
    assert r["wrong_leaves"] == [] and r["leaves"] > 0
    # every device holds exactly the bytes the planner counts for its shards of both experts
    assert r["param_bytes_per_device"] == [r["planned_param_bytes"]] == [2 * r["planned_expert_bytes"]]
    assert r["vae_replicated"] and r["text_encoder_replicated"]
    assert r["cond_on_mesh"] and r["latents_replicated"]


def test_sampler_matmuls_run_in_bfloat16(report):
    _, r = report
    layer_dots = [tuple(d) for d in r["layer_dots"]]
    # per block: q, k, v, o, QK^T, PV (self), q, o, QK^T, PV (cross), fc1, fc2, per expert
    assert len(layer_dots) >= 2 * 12
    assert set(layer_dots) == {("bfloat16", "bfloat16")}
    # outside the layer scans: the text K/V cache, patch and text embeddings in bfloat16; the time
    # embedding, time projection and head in float32 by design (as the official runtime)
    others = [tuple(d) for d in r["other_dots"]]
    f32 = [d for d in others if d != ("bfloat16", "bfloat16")]
    assert all(d == ("float32", "float32") for d in f32)
    assert len(f32) <= 4 * 2 and len(others) > len(f32)
    print(f"traced matmuls: {len(layer_dots)} in layer scans (bf16); {len(others)} outside, {len(f32)} f32")


def test_bad_mesh_specs_name_the_axes_and_devices(model, bench, tmp_path, capsys):
    from cosjax.cli import main

    data = f"vbvr-bench:{bench}"
    base = ["run", "trajectory", "--model", model, "--data", data, "--out", str(tmp_path / "r")]
    for spec, words in (
        ("data=2,pipe=4", ["unknown axis 'pipe'", "data, fsdp, context, tensor"]),
        ("data=3", ["spans 3 devices", "has 1 device(s)"]),
        ("fsdp", ["not AXIS=SIZE"]),
    ):
        assert main([*base, "--mesh", spec, "steps=2"]) == 2
        err = capsys.readouterr().err
        assert all(w in err for w in words), err
    assert not (tmp_path / "r").exists()
