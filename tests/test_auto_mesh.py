"""`--mesh auto`: the planner's choice (least communication among the meshes that fit), its refusal,
mesh specs, the benchmarks/README.md table, and the chosen plan against XLA on 8 fake devices."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.xla import device_env

from cosjax.configs import get_preset
from cosjax.memory import (
    GiB,
    choose_mesh,
    communication_bytes,
    global_mesh_shape,
    mesh_candidates,
    plan_memory,
)
from cosjax.parallel import parse_mesh

REPO = Path(__file__).parent.parent
A14B = get_preset("wan2.2-i2v-a14b")
TPU = dict(attention="flash", solver="euler", vae_stride=A14B.vae_stride)


def test_choice_is_the_least_communication_mesh_that_fits():
    budget = 32 * GiB  # v6e: 8 chips, 480p, 81 frames, CFG
    plan = choose_mesh(A14B.dit, 2, 81, 480, 832, 8, budget, **TPU)
    assert plan.total <= budget and plan.devices == 8
    for mesh in mesh_candidates(8, A14B.dit.num_heads, 2):
        other = plan_memory(A14B.dit, 2, 81, 480, 832, mesh, **TPU)
        if other.total <= budget:
            assert communication_bytes(other) >= communication_bytes(plan), mesh
    # without a memory limit the data axis (free of communication) always takes the CFG pair
    assert choose_mesh(A14B.dit, 2, 81, 480, 832, 8, None, **TPU).mesh_shape["data"] == 2
    # Ulysses needs context x tensor to divide the 40 heads: context 8 is never offered
    assert all(
        m["context"] * m["tensor"] in (1, 2, 4, 8) and 40 % (m["context"] * m["tensor"]) == 0
        for m in mesh_candidates(16, 40, 2)
        if m["context"] > 1
    )


def test_multi_host_choice_keeps_each_replica_on_one_host():
    """v6e-16 as 4 hosts x 4 chips: the plan is one host's (a replica never spans hosts, and data rows
    on different hosts split cases, not the CFG pair); the run's mesh multiplies its data by 4."""
    budget = 32 * GiB
    plan = choose_mesh(A14B.dit, 2, 81, 480, 832, 16, budget, hosts=4, **TPU)
    assert plan == choose_mesh(A14B.dit, 2, 81, 480, 832, 4, budget, **TPU)
    shape = global_mesh_shape(plan, 4)
    assert shape["data"] == 4 * plan.mesh_shape["data"]
    assert shape["fsdp"] * shape["context"] * shape["tensor"] <= 4  # one replica within 4 chips
    assert plan.total <= budget and plan.batch_per_device == 2  # the CFG pair whole on every host
    # from the chip count alone the planner would pick a replica of 8 chips, spanning two hosts
    alone = choose_mesh(A14B.dit, 2, 81, 480, 832, 16, budget, **TPU)
    assert alone.devices // alone.mesh_shape["data"] > 4
    with pytest.raises(ValueError, match="do not split evenly over 3 hosts"):
        choose_mesh(A14B.dit, 2, 81, 480, 832, 16, budget, hosts=3, **TPU)


def test_refuses_with_the_fix_named():
    with pytest.raises(ValueError) as err:
        choose_mesh(A14B.dit, 2, 81, 720, 1280, 8, 16 * GiB, **TPU)  # v5litepod-8 at 720p
    message = str(err.value)
    assert "no mesh of the 8 devices fits 16.0 GiB" in message
    assert "use 16 devices of this size" in message and "smaller size" in message
    # the named fix holds
    assert choose_mesh(A14B.dit, 2, 81, 720, 1280, 16, 16 * GiB, **TPU).total <= 16 * GiB


def test_mesh_specs():
    assert parse_mesh("data=2,fsdp=2,context=2", 8) == {"data": 2, "fsdp": 2, "context": 2, "tensor": 1}
    assert parse_mesh(" fsdp=8 ", 8) == {"data": 1, "fsdp": 8, "context": 1, "tensor": 1}
    for spec, words in (
        ("data=2,pipe=4", "unknown axis 'pipe'"),
        ("data=2,data=4", "given twice"),
        ("data=x", "not AXIS=SIZE"),
        ("data=0,fsdp=8", "not AXIS=SIZE"),
        ("data=2", "spans 2 devices but this machine has 8"),
    ):
        with pytest.raises(ValueError, match=words) as err:
            parse_mesh(spec, 8)
        assert "data, fsdp, context, tensor" in str(err.value)


def test_readme_table_is_the_planners():
    sys.path.insert(0, str(REPO / "benchmarks"))
    from mesh_table import table

    readme = (REPO / "benchmarks" / "README.md").read_text()
    for row in table().splitlines():
        assert row in readme, row


def test_chosen_plan_against_xla_on_fake_devices():
    """The small DiT of test_memory's sharded check (dim 512, 4 heads, 4 layers, L = 1024, CFG,
    float32) on 8 devices of 160 MiB: the planner's choice compiled, per-device bytes compared."""
    from test_memory import SHARDED_CASE

    config, frames, height, width = SHARDED_CASE
    budget = 160 * 2**20
    kwargs = dict(param_dtype="float32", compute_dtype="float32", platform="cpu")
    plan = choose_mesh(config, 1, frames, height, width, 8, budget, **kwargs)
    assert plan.mesh_shape == {"data": 2, "fsdp": 1, "context": 2, "tensor": 2}  # data=2,context=4 is 171 MiB
    env = device_env(8)
    script = Path(__file__).parent / "test_memory.py"
    proc = subprocess.run(
        [sys.executable, str(script), "--sharded", json.dumps([dict(plan.mesh_shape)])],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (row,) = json.loads(proc.stdout.strip().splitlines()[-1])
    ratio = plan.forward_peak / row["total"]
    print(
        f"--mesh auto picked {plan.mesh_shape}: planner {plan.forward_peak / 2**20:.1f} MiB per device, "
        f"XLA {row['total'] / 2**20:.1f} MiB, ratio {ratio:.3f}; budgeted total {plan.total / 2**20:.1f} MiB"
    )
    assert 1.0 <= ratio <= 1.35 and row["total"] <= budget
