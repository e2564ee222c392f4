"""Resumable experiment runs: one folder per run, one atomic record per finished case.

    out/
      config.json          the resolved experiment config (written once; a rerun must match it)
      cases/<case>.json    one record per finished case, written atomically when the case completes
      cases/<case>/...     the case's artifacts (images, mp4s), written before its record
      results.json         the final tables, recomputed from every case record
      results.csv          one row per case (flat scalar fields)
      tb/                  TensorBoard event files (tensorboardX; process 0, and each group's lead)

A case counts as finished exactly when its record exists, and records are written with a rename, so
a run killed at any point resumes by skipping the finished cases and recomputing the rest; the final
tables are a pure function of the records, hence identical to an uninterrupted run's.

Multi-host runs (`cosjax.hosts`). The processes form work groups, each holding whole data-parallel
replicas of the run's mesh: a group of one host when a replica's fsdp x context x tensor devices
are local to it, a group of several hosts in lockstep when a replica spans them (no mesh: one
group per process). Then:
  * process 0 alone reads the folder: it checks config.json, decides the finished set and reads
    the records for the final tables, and broadcasts each answer, so every host agrees (a host
    reading its own disk could disagree and hang in a collective);
  * the unfinished fixed batches are dealt round-robin over the groups, so each case is computed
    exactly once on the slice; groups share no collective until the barrier at the end;
  * each group's lead process writes its own cases' artifacts and records, each once (process 0
    writes config.json and the results). The lead writes rather than shipping videos through
    collectives to process 0, which would serialise all output on one host and need a second path
    for TensorBoard. So a run with several groups needs one folder every host sees (a `gs://`
    path or a shared filesystem): a probe file written by process 0 must be visible to every lead,
    or every host refuses with the same error before computing anything. With one group (one
    process, or a replica spanning all hosts) only process 0 writes and no sharing is needed;
  * the experiments refuse a replica spanning processes for now (`experiments.common.prepare`):
    their samplers close over the parameters, and JAX refuses closed-over arrays of which a
    process holds only a part; the bookkeeping here already runs such a group in lockstep;
  * every group's sub-mesh has the same shape and a batch is always the same slice of the case
    list, so a case's numbers do not depend on which group computed it or on where a killed run
    stopped: a resumed run's tables are bit-identical to an uninterrupted one's.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import secrets
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cosjax.hosts import WorkGroup, barrier, broadcast_json, decide, gather_flags, single_group
from cosjax.parallel import is_main_process
from cosjax.paths import check_destination, user_path, write_atomic

log = logging.getLogger(__name__)


class ConfigMismatchError(ValueError):
    """The run folder holds results of a different config."""


def to_jsonable(value: Any) -> Any:
    """numpy scalars/arrays, tuples and Paths -> plain JSON types (floats rounded to 7 digits)."""
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return to_jsonable(value.tolist())
    if isinstance(value, np.generic):
        return to_jsonable(value.item())
    if isinstance(value, float):
        return float(f"{value:.7g}") if np.isfinite(value) else None
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return value


class DamagedRunError(ValueError):
    """A file of a run folder cannot be read (truncated or edited by hand)."""


def read_json(file: Path, fix: str) -> Any:
    """The JSON in `file`; a `DamagedRunError` naming the file and the fix when it does not parse."""
    try:
        return json.loads(file.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DamagedRunError(f"{file}: damaged, not valid JSON ({e}); {fix}") from None


def _diff(stored: dict, wanted: dict, prefix: str = "") -> list[str]:
    keys = sorted(set(stored) | set(wanted))
    out = []
    for k in keys:
        a, b = stored.get(k, "<absent>"), wanted.get(k, "<absent>")
        if isinstance(a, dict) and isinstance(b, dict):
            out += _diff(a, b, f"{prefix}{k}.")
        elif a != b:
            out.append(f"{prefix}{k}: stored {a!r}, now {b!r}")
    return out


class RunFolder:
    """The output folder of one experiment run.

    Args:
      out: the folder (created if needed): a local path (made absolute) or a URL (`gs://...`).
      config: the resolved config as a JSON-able dict (experiment name, model, data and every
        parameter); stored on first use and compared on every later use.
      group: this process's work group (`cosjax.hosts.work_group`); None = every process in one
        group, process 0 writing.

    Constructing it is a collective on a multi-host run (every process, same order).

    Raises:
      ConfigMismatchError: `out` already holds a run of a different config (the message lists the
        differing fields and how to proceed); raised on every process.
      FileExistsError: `out` is a non-empty folder that holds no run (no config.json).
      ValueError: several work groups and a folder the leads do not share with process 0.
    """

    def __init__(self, out: str | Path, config: dict, group: WorkGroup | None = None):
        self.out = user_path(out)
        self.config = to_jsonable(config)
        self.cases_dir = self.out / "cases"
        self.group = group or single_group()
        self.owner = is_main_process()  # config.json, results, the finished set
        self.writes = self.group.is_lead  # this group's case records and artifacts
        decide(self._claim)
        if self.group.count > 1:
            self._check_shared()

    def _claim(self) -> None:
        """Process 0: compares or stores config.json."""
        config_file = self.out / "config.json"
        if not config_file.exists():  # never write results into a folder of the user's
            check_destination(self.out, "config.json", what="--out")
        if config_file.exists():
            stored = read_json(
                config_file, "choose another --out folder, or delete this one to start the run again"
            )
            if stored != self.config:
                diff = "\n  ".join(_diff(stored, self.config)[:20])
                raise ConfigMismatchError(
                    f"{self.out} holds a run with a different config:\n  {diff}\n"
                    "rerun with the same settings to resume it, or choose another --out folder "
                    "(or delete this one) to start a new run"
                )
        else:
            write_atomic(config_file, json.dumps(self.config, indent=2, sort_keys=True))

    def _check_shared(self) -> None:
        """Every group lead must see a file process 0 just wrote (see the module docstring)."""
        token = broadcast_json(secrets.token_hex(8) if self.owner else None)
        probe = self.out / f".shared-{token}"
        decide(lambda: write_atomic(probe, token))  # written before any process looks
        seen = not self.writes or (probe.exists() and probe.read_text() == token)
        flags = gather_flags(seen)  # every lead has looked
        if self.owner:
            probe.unlink(missing_ok=True)
        blind = [p for p, ok in enumerate(flags) if not ok]
        if blind:
            raise ValueError(
                f"run folder {self.out} is not shared: process(es) {blind} do not see the files "
                f"process 0 writes there. This run has {self.group.count} work groups whose lead "
                "processes each write their own cases, so --out must be one folder every host "
                "sees: a gs://bucket/path, or a shared filesystem mounted at the same path"
            )

    def case_file(self, case_id: str) -> Path:
        return self.cases_dir / f"{case_id}.json"

    def artifact(self, case_id: str, name: str) -> Path:
        """Path of an artifact of a case (its folder is created)."""
        path = self.cases_dir / case_id / name
        if self.writes:
            path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def finished(self, case_id: str) -> bool:
        """Whether this process sees the record of `case_id` (local view; see `finished_ids`)."""
        return self.case_file(case_id).exists()

    def finished_ids(self, case_ids: Iterable[str]) -> set[str]:
        """The finished ones among `case_ids`, as process 0 sees them, on every process (collective)."""
        case_ids = list(case_ids)

        def read():
            on_disk = {p.name[: -len(".json")] for p in self.cases_dir.glob("*.json")}
            return [c for c in case_ids if c in on_disk]

        return set(decide(read))

    def save(self, case_id: str, record: dict) -> None:
        """Marks a case finished with its record (atomic; the group's lead process only)."""
        if self.writes:
            write_atomic(self.case_file(case_id), json.dumps(to_jsonable(record), sort_keys=True))

    def load(self, case_id: str) -> dict:
        return read_json(
            self.case_file(case_id), "delete this record and rerun the same command to compute the case again"
        )

    def records(self, case_ids: Iterable[str]) -> list[dict]:
        """The records of `case_ids` in that order (every one must be finished), read by process 0
        and broadcast (collective)."""
        case_ids = list(case_ids)
        return decide(lambda: [self.load(c) for c in case_ids])

    def write_results(self, summary: dict, rows: Sequence[dict]) -> Path:
        """Writes results.json (summary + rows) and results.csv (scalar columns of rows)."""
        if not self.owner:
            return self.out / "results.json"
        payload = {"config": self.config, "summary": to_jsonable(summary), "cases": to_jsonable(rows)}
        write_atomic(self.out / "results.json", json.dumps(payload, indent=2, sort_keys=True))
        scalar_keys: list[str] = []
        for row in rows:
            for k, v in row.items():
                if k not in scalar_keys and (
                    v is None or isinstance(v, str | int | float | bool | np.generic)
                ):
                    scalar_keys.append(k)
        buffer = io.StringIO()
        table = csv.DictWriter(buffer, fieldnames=scalar_keys, extrasaction="ignore")
        table.writeheader()
        for row in rows:
            table.writerow(to_jsonable({k: row.get(k) for k in scalar_keys}))
        write_atomic(self.out / "results.csv", buffer.getvalue())
        return self.out / "results.json"


def run_cases(
    folder: RunFolder,
    case_ids: Sequence[str],
    compute: Callable[[list[str]], list[dict]],
    batch_size: int = 1,
    progress: bool = True,
    desc: str = "cases",
    stop_after: int | None = None,
) -> list[str]:
    """Computes the unfinished cases in fixed batches and saves each record when its batch is done.

    Batches are fixed slices of `case_ids` (not of the unfinished ones), so a resumed run computes
    every case in the same batch as an uninterrupted run would, and its numbers are bit-identical.
    A batch whose cases are all finished is skipped; in a partly finished batch (possible only when
    the process died while saving it) only the unfinished records are written. On a multi-host run
    the unfinished batches are dealt round-robin over the work groups (`folder.group`), from the
    finished set process 0 decided, and every process waits for all at the end (see the module
    docstring); every process must call this.

    Args:
      folder: the run folder.
      case_ids: every case of the run, in order.
      compute: ids of one batch -> their records (same order); called on every process of the
        batch's group.
      batch_size: cases per `compute` call (the last batch may be smaller).
      progress: show a tqdm bar (process 0: its group's share).
      stop_after: stop once this many cases were saved by this call (simulates a kill; for tests).

    Returns:
      The ids computed and saved by this process's group in this call.
    """
    from tqdm.auto import tqdm

    group = folder.group
    batches = [list(case_ids[i : i + batch_size]) for i in range(0, len(case_ids), batch_size)]
    finished = folder.finished_ids(case_ids)
    todo = [b for b in batches if not all(c in finished for c in b)]
    mine = todo[group.index :: group.count]
    done: list[str] = []
    bar = tqdm(
        total=len(finished) + sum(c not in finished for b in mine for c in b),
        initial=len(finished),
        desc=desc if group.count == 1 else f"{desc} (group {group.index + 1} of {group.count})",
        disable=not (progress and is_main_process()),
    )
    for batch in mine:
        if stop_after is not None and len(done) >= stop_after:
            break
        records = compute(batch)
        if len(records) != len(batch):
            raise RuntimeError(f"compute returned {len(records)} records for {len(batch)} cases")
        new = [c for c in batch if c not in finished]
        for case_id, record in zip(batch, records, strict=True):
            if case_id in new:
                folder.save(case_id, dict(record, case=case_id))
        done += new
        log.info(
            "computed %s (group %d of %d, processes %s)",
            ",".join(new),
            group.index,
            group.count,
            ",".join(map(str, group.processes)),
        )
        bar.update(len(new))
    bar.close()
    barrier(f"cosjax run_cases {desc}")
    return done
