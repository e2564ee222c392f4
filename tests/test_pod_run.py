"""A pod run on one machine: `cosjax run` in 2 processes x 4 fake CPU devices over loopback.

The processes start as a user would start N local processes of one command (COSJAX_DISTRIBUTED=1,
JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID). With `--mesh data=2,fsdp=4` each
process holds one data-parallel replica, so the processes form two work groups that split the
cases (`cosjax.runs`). Which process computed which case is read from the per-batch log line
(COSJAX_LOG=INFO). The reference is one process on 4 fake devices with `--mesh fsdp=4`: the shape of
each process's replica. (One process on all 8 devices with `data=2,fsdp=4` is one work group whose
CFG pair is split over `data` inside the program; XLA:CPU's numbers depend on the per-device batch
shape, so that run agrees with these only to float32 rounding, not bit for bit.)
"""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest
from helpers.xla import CACHE_VARS, device_env

from cosjax.hosts import work_group
from cosjax.parallel import _process_settings, make_mesh

REPO = Path(__file__).resolve().parents[1]
COMMAND = ["run", "trajectory", "--mesh", "data=2,fsdp=4", "--quiet", "--data", "toy:maze,move"]
SINGLE = ["run", "trajectory", "--mesh", "fsdp=4", "--quiet", "--data", "toy:maze,move"]
SETTINGS = ["cases=3", "batch_size=1", "steps=2"]
CASES = sorted(f"{family}-in-{100_000 + i}" for family in ("maze", "move") for i in range(3))
COMPUTED = re.compile(r"computed (\S+) \(group (\d) of (\d), processes ([\d,]+)\)")
TIMEOUT = 240  # seconds per run; a hang in a collective fails the test instead of blocking CI


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def env_for(devices: int, **extra: str) -> dict:
    """The suite's XLA flags and compilation cache (`helpers.xla`), no other JAX_ or COSJAX_ setting."""
    keep = {"JAX_PLATFORMS", "JAX_COMPILATION_CACHE_DIR", *CACHE_VARS}
    env = {k: v for k, v in device_env(devices).items() if k in keep or not k.startswith(("JAX_", "COSJAX_"))}
    env.update(PYTHONPATH=str(REPO), COSJAX_LOG="INFO", **extra)
    return env


def start(out: Path, processes: int, command=COMMAND, devices: int = 8) -> list[subprocess.Popen]:
    """`processes` copies of `cosjax run ... --out out`, sharing `devices` fake devices."""
    port = free_port()
    procs = []
    for i in range(processes):
        extra = {}
        if processes > 1:
            extra = dict(
                COSJAX_DISTRIBUTED="1",
                JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}",
                JAX_NUM_PROCESSES=str(processes),
                JAX_PROCESS_ID=str(i),
            )
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "cosjax.cli", *command, "--out", str(out), *SETTINGS],
                env=env_for(devices // processes, **extra),
                cwd=REPO,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    return procs


def kill(procs) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGKILL)
        p.wait(timeout=30)


def finish(procs, returncode: int = 0) -> list[str]:
    """Waits for every process (bounded); their stderr. Kills all of them on failure."""
    try:
        logs = [p.communicate(timeout=TIMEOUT)[1] for p in procs]
    finally:
        kill(procs)
    for p, log in zip(procs, logs, strict=True):
        assert p.returncode == returncode, log[-3000:]
    return logs


def computed(logs: list[str]) -> dict[int, list[str]]:
    """process index -> the cases its group computed (logged by every process of the group)."""
    out = {}
    for index, log in enumerate(logs):
        out[index] = [m.group(1) for m in COMPUTED.finditer(log)]
    return out


def outputs(out: Path) -> dict:
    """Everything a run leaves that a reader uses: results, the records, every case's grid image."""
    return {
        "results.json": json.loads((out / "results.json").read_text()),
        "results.csv": (out / "results.csv").read_text(),
        "records": {p.name: p.read_text() for p in sorted((out / "cases").glob("*.json"))},
        "grids": {c: (out / "cases" / c / "grid.png").read_bytes() for c in CASES},
    }


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("single") / "run"
    finish(start(out, 1, SINGLE, devices=4))
    return outputs(out)


def test_two_processes_split_the_cases(reference, tmp_path):
    """Each case is computed exactly once across both processes, one set of records is written,
    and the run equals the single-process one bit for bit."""
    out = tmp_path / "run"
    t0 = time.perf_counter()
    logs = finish(start(out, 2))
    print(f"2-process run: {time.perf_counter() - t0:.1f} s")
    by_process = computed(logs)
    assert sorted(by_process[0] + by_process[1]) == CASES  # every case once, none twice
    assert len(by_process[0]) == len(by_process[1]) == 3  # dealt round-robin over the 2 groups
    assert "group 0 of 2, processes 0" in logs[0] and "group 1 of 2, processes 1" in logs[1]
    assert sorted((out / "cases").glob("*.json")) == [out / "cases" / f"{c}.json" for c in CASES]
    assert not list(out.glob(".*"))  # the sharing probe is gone, no temp files left
    events = sorted(p.name for p in (out / "tb").iterdir())
    assert len(events) == 2, events  # process 0 (run summary, its cases) and group 1's lead
    assert outputs(out) == reference


def test_killed_process_resumes(reference, tmp_path):
    """SIGKILL of process 1 after its first record, then the whole job is gone; the rerun computes
    exactly the missing cases and the final results equal the uninterrupted run's."""
    out = tmp_path / "run"
    procs = start(out, 2)
    try:
        seen = ""
        deadline = time.monotonic() + TIMEOUT
        while not COMPUTED.search(seen):  # process 1's group saved its first case
            line = procs[1].stderr.readline()
            assert line or procs[1].poll() is None, seen[-3000:]
            assert time.monotonic() < deadline, "process 1 computed nothing in time"
            seen += line
        procs[1].send_signal(signal.SIGKILL)
        procs[1].wait(timeout=30)
    finally:
        kill(procs)  # a pod job whose host died: the other processes go too
    before = {p.stem for p in (out / "cases").glob("*.json")}
    assert 1 <= len(before) < len(CASES), before
    assert not (out / "results.json").exists()

    logs = finish(start(out, 2))
    by_process = computed(logs)
    print(f"records before the rerun: {len(before)} of {len(CASES)}; rerun computed {by_process}")
    assert sorted(by_process[0] + by_process[1]) == sorted(set(CASES) - before)
    assert outputs(out) == reference


def test_unshared_folder_is_refused(tmp_path):
    """Two groups whose leads write to different folders (each host's local disk): both refuse
    before computing anything, with the fix named."""
    port = free_port()
    procs = []
    for i in range(2):
        env = env_for(
            4,
            COSJAX_DISTRIBUTED="1",
            JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}",
            JAX_NUM_PROCESSES="2",
            JAX_PROCESS_ID=str(i),
        )
        cmd = [sys.executable, "-m", "cosjax.cli", *COMMAND, "--out", str(tmp_path / f"host{i}"), *SETTINGS]
        procs.append(subprocess.Popen(cmd, env=env, cwd=REPO, stderr=subprocess.PIPE, text=True))
    for log in finish(procs, returncode=2):
        assert "is not shared: process(es) [1]" in log and "gs://" in log, log[-3000:]
        assert not COMPUTED.search(log)
    assert not (tmp_path / "host1" / "cases").exists()


class FakeDevice:
    """Stands for a device of another process (work_group reads only `process_index`)."""

    def __init__(self, index: int, process: int):
        self.id, self.process_index, self.platform, self.device_kind = index, process, "cpu", "cpu"


def fake_mesh(monkeypatch, process: int, **axes):
    """A mesh over 2 hosts x 4 devices as seen from `process`."""
    from jax.sharding import AxisType, Mesh

    monkeypatch.setattr(jax, "process_index", lambda: process)
    monkeypatch.setattr(jax, "process_count", lambda: 2)
    sizes = [axes.get(a, 1) for a in ("data", "fsdp", "context", "tensor")]
    devices = np.array([FakeDevice(i, i // 4) for i in range(8)], dtype=object).reshape(sizes)
    return Mesh(devices, ("data", "fsdp", "context", "tensor"), axis_types=(AxisType.Auto,) * 4)


@pytest.mark.parametrize(
    "axes, process, expected",
    [
        ({"data": 2, "fsdp": 4}, 1, (1, 2, (1,), {"data": 1, "fsdp": 4})),
        ({"data": 8}, 0, (0, 2, (0,), {"data": 4, "fsdp": 1})),
        ({"data": 4, "fsdp": 2}, 1, (1, 2, (1,), {"data": 2, "fsdp": 2})),
        ({"fsdp": 8}, 1, (0, 1, (0, 1), {"data": 1, "fsdp": 8})),
        ({"data": 2, "context": 2, "tensor": 2}, 0, (0, 2, (0,), {"data": 1, "context": 2, "tensor": 2})),
    ],
)
def test_work_groups(monkeypatch, axes, process, expected):
    """Mesh rows sharing a process form one group; a group's sub-mesh is its rows."""
    group = work_group(fake_mesh(monkeypatch, process, **axes))
    index, count, processes, shape = expected
    assert (group.index, group.count, group.processes) == (index, count, processes)
    assert dict(group.mesh.shape) == {"data": 1, "fsdp": 1, "context": 1, "tensor": 1, **shape}
    assert {d.process_index for d in group.mesh.devices.flat} == set(processes)


def test_replica_spanning_hosts_is_refused(monkeypatch, tmp_path):
    from experiments import common, trajectory

    mesh = fake_mesh(monkeypatch, 0, fsdp=8)
    with pytest.raises(ValueError, match=r"replica spans processes \[0, 1\].*divides the"):
        common.prepare("trajectory", trajectory.Config(), None, tmp_path / "run", mesh=mesh)
    assert not (tmp_path / "run").exists()


def test_one_process_is_one_group():
    """Without distribution: one group holding the whole mesh (or no mesh), led by process 0."""
    group = work_group(make_mesh())
    assert (group.index, group.count, group.processes, group.is_lead) == (0, 1, (0,), True)
    assert group.mesh.devices.shape == make_mesh().devices.shape
    assert work_group(None).mesh is None


def test_process_settings_from_environment():
    address = {"JAX_COORDINATOR_ADDRESS": "127.0.0.1:1234"}
    assert _process_settings({}) == {}
    assert _process_settings({**address, "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "1"}) == {
        "num_processes": 2,
        "process_id": 1,
    }
    with pytest.raises(ValueError, match="only JAX_PROCESS_ID is set"):
        _process_settings({**address, "JAX_PROCESS_ID": "1"})
    with pytest.raises(ValueError, match="need JAX_COORDINATOR_ADDRESS"):
        _process_settings({"JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "0"})
    with pytest.raises(ValueError, match="not in 0..JAX_NUM_PROCESSES-1=1"):
        _process_settings({**address, "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "2"})
    with pytest.raises(ValueError, match="not integers"):
        _process_settings({**address, "JAX_NUM_PROCESSES": "two", "JAX_PROCESS_ID": "0"})
