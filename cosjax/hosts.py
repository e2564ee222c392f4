"""Multi-host bookkeeping: which processes compute which cases, and agreeing on what is finished.

A run's *work groups* split a mesh's data-parallel replicas (the slices of its `data` axis) over
the processes: rows of the mesh whose devices share a process are joined, so a group is the
smallest set of whole processes holding whole replicas.

    2 hosts x 4 devices, data=2,fsdp=4   -> 2 groups: each host alone, sub-mesh data=1,fsdp=4
    2 hosts x 4 devices, data=8          -> 2 groups: each host alone, sub-mesh data=4
    2 hosts x 4 devices, fsdp=8          -> 1 group: both hosts in lockstep on the whole mesh
    no mesh                              -> one group per process, on its first local device

Every process of a group runs the same cases in lockstep on the group's sub-mesh; different groups
share nothing but the bookkeeping below (one `broadcast_json` per decision, one barrier per run).
The helpers are collectives: every process must call them in the same order. With one process they
are plain function calls.
"""

from __future__ import annotations

import dataclasses
import json

import jax
import numpy as np
from jax.sharding import Mesh


@dataclasses.dataclass(frozen=True)
class WorkGroup:
    """The processes that compute the same cases together.

    Attributes:
      index: this group's number, 0 .. count-1 (groups are numbered by their first mesh row).
      count: how many groups the run has (cases are dealt round-robin over them).
      processes: the group's process indices, ascending; the first is its lead, which writes the
        group's case records and artifacts.
      mesh: the group's sub-mesh (the rows of the run's mesh it holds; axis names kept), or None
        for a run without a mesh (each process computes on its first local device).
    """

    index: int
    count: int
    processes: tuple[int, ...]
    mesh: Mesh | None

    @property
    def lead(self) -> int:
        return self.processes[0]

    @property
    def is_lead(self) -> bool:
        return jax.process_index() == self.lead

    @property
    def spans_processes(self) -> bool:
        return len(self.processes) > 1


def single_group() -> WorkGroup:
    """Every process in one group (lockstep, process 0 writes): what a run without groups does."""
    return WorkGroup(0, 1, tuple(range(jax.process_count())), None)


def work_group(mesh: Mesh | None = None) -> WorkGroup:
    """This process's work group for a run on `mesh` (axis 0 = `data`; None: one group per process).

    Raises:
      ValueError: a process has no device in the mesh, or the groups' sub-meshes differ in shape
        (a case's numbers would then depend on which group computed it, breaking bit-identical
        resumes); the message names the mesh and what to change.
    """
    me = jax.process_index()
    if mesh is None:
        return WorkGroup(me, jax.process_count(), (me,), None)
    grid = np.asarray(mesh.devices)
    groups: list[tuple[list[int], set[int]]] = []  # (mesh rows, processes), merged while scanning
    for row in range(grid.shape[0]):
        rows, procs = [row], {d.process_index for d in grid[row].flat}
        rest = []
        for g_rows, g_procs in groups:
            if g_procs & procs:
                rows, procs = g_rows + rows, g_procs | procs
            else:
                rest.append((g_rows, g_procs))
        groups = [*rest, (sorted(rows), procs)]
    groups.sort(key=lambda g: g[0][0])
    shape = dict(mesh.shape)
    missing = sorted(set(range(jax.process_count())) - set().union(*(p for _, p in groups)))
    if missing:
        raise ValueError(
            f"mesh {shape} has no device of process(es) {missing}; build the mesh over all "
            f"{jax.device_count()} devices (jax.devices()) so every host computes"
        )
    sizes = sorted({len(r) for r, _ in groups})
    if len(sizes) > 1:
        raise ValueError(
            f"mesh {shape} splits into work groups of unequal size ({sizes} data rows): choose data, "
            "fsdp, context and tensor so that each replica (fsdp x context x tensor devices) lies "
            "within one host, or spans whole hosts"
        )
    for index, (rows, procs) in enumerate(groups):
        if me in procs:
            sub = Mesh(grid[rows], mesh.axis_names, axis_types=mesh.axis_types)
            return WorkGroup(index, len(groups), tuple(sorted(procs)), sub)
    raise AssertionError("unreachable: every process is in a group")


def broadcast_json(value=None):
    """Process 0's JSON-able `value`, returned on every process (others pass anything)."""
    if jax.process_count() == 1:
        return value
    from jax.experimental import multihost_utils

    main = jax.process_index() == 0
    data = np.frombuffer(json.dumps(value).encode(), np.uint8) if main else np.zeros(0, np.uint8)
    size = int(multihost_utils.broadcast_one_to_all(np.int64(data.size)))
    buffer = np.zeros(-(-size // 1024) * 1024, np.uint8)  # padded: fewer distinct shapes to compile
    if main:
        buffer[:size] = data
    out = np.asarray(multihost_utils.broadcast_one_to_all(buffer), np.uint8)
    return json.loads(out[:size].tobytes())


def decide(fn, errors: tuple[type[BaseException], ...] = (ValueError, OSError)):
    """`fn()` run on process 0 (it alone reads the run folder), its JSON-able answer on every
    process. An error of `errors` there is raised on every process (as a ValueError naming it
    elsewhere), so no process is left waiting in the next collective."""
    if jax.process_count() == 1:
        return fn()
    failure = None
    if jax.process_index() == 0:
        try:
            answer = {"value": fn()}
        except errors as e:
            failure, answer = e, {"error": f"{type(e).__name__}: {e}"}
    answer = broadcast_json(answer if jax.process_index() == 0 else None)
    if "error" in answer:
        if failure is not None:
            raise failure
        raise ValueError(f"on process 0: {answer['error']}")
    return answer["value"]


def gather_flags(flag: bool) -> list[bool]:
    """Every process's `flag`, in process order."""
    if jax.process_count() == 1:
        return [bool(flag)]
    from jax.experimental import multihost_utils

    return [bool(f) for f in np.asarray(multihost_utils.process_allgather(np.int32(flag))).reshape(-1)]


def barrier(name: str) -> None:
    """Waits until every process got here."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)
