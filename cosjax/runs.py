"""Resumable experiment runs: one folder per run, one atomic record per finished case.

    out/
      config.json          the resolved experiment config (written once; a rerun must match it)
      cases/<case>.json    one record per finished case, written atomically when the case completes
      cases/<case>/...     the case's artifacts (images, mp4s), written before its record
      results.json         the final tables, recomputed from every case record
      results.csv          one row per case (flat scalar fields)
      tb/                  TensorBoard event files (tensorboardX, process 0 only)

A case counts as finished exactly when its record exists, and records are written with a rename, so
a run killed at any point resumes by skipping the finished cases and recomputing the rest; the final
tables are a pure function of the records, hence identical to an uninterrupted run's. Only process 0
writes; every process computes (the sampler may span hosts).
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cosjax.parallel import is_main_process
from cosjax.paths import AnyPath, check_destination, staged_file, user_path


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


def write_atomic(path: AnyPath, data: bytes | str) -> None:
    """Writes `data` to `path` whole or not at all (see `cosjax.paths.staged_file`).

    Local: a temporary file in the same folder, renamed over `path`; its mode follows the umask, as
    for any other file (0644 under the usual 022). URL: one upload, published when complete.
    """
    with staged_file(path) as tmp:
        tmp.write_bytes(data.encode() if isinstance(data, str) else data)


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

    Raises:
      ConfigMismatchError: `out` already holds a run of a different config (the message lists the
        differing fields and how to proceed).
      FileExistsError: `out` is a non-empty folder that holds no run (no config.json).
    """

    def __init__(self, out: str | Path, config: dict):
        self.out = user_path(out)
        self.config = to_jsonable(config)
        self.cases_dir = self.out / "cases"
        self.writes = is_main_process()
        config_file = self.out / "config.json"
        if self.writes and not config_file.exists():  # never write results into a folder of the user's
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
        elif self.writes:
            write_atomic(config_file, json.dumps(self.config, indent=2, sort_keys=True))

    def case_file(self, case_id: str) -> Path:
        return self.cases_dir / f"{case_id}.json"

    def artifact(self, case_id: str, name: str) -> Path:
        """Path of an artifact of a case (its folder is created)."""
        path = self.cases_dir / case_id / name
        if self.writes:
            path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def finished(self, case_id: str) -> bool:
        return self.case_file(case_id).exists()

    def save(self, case_id: str, record: dict) -> None:
        """Marks a case finished with its record (atomic; process 0 only)."""
        if self.writes:
            write_atomic(self.case_file(case_id), json.dumps(to_jsonable(record), sort_keys=True))

    def load(self, case_id: str) -> dict:
        return read_json(
            self.case_file(case_id), "delete this record and rerun the same command to compute the case again"
        )

    def records(self, case_ids: Iterable[str]) -> list[dict]:
        """The records of `case_ids` in that order (every one must be finished)."""
        return [self.load(c) for c in case_ids]

    def write_results(self, summary: dict, rows: Sequence[dict]) -> Path:
        """Writes results.json (summary + rows) and results.csv (scalar columns of rows)."""
        if not self.writes:
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
    the process died while saving it) only the unfinished records are written.

    Args:
      folder: the run folder.
      case_ids: every case of the run, in order.
      compute: ids of one batch -> their records (same order).
      batch_size: cases per `compute` call (the last batch may be smaller).
      progress: show a tqdm bar (process 0).
      stop_after: stop once this many cases were saved by this call (simulates a kill; for tests).

    Returns:
      The ids computed and saved by this call.
    """
    from tqdm.auto import tqdm

    batches = [list(case_ids[i : i + batch_size]) for i in range(0, len(case_ids), batch_size)]
    todo = [b for b in batches if not all(folder.finished(c) for c in b)]
    done: list[str] = []
    bar = tqdm(
        total=len(case_ids),
        initial=len(case_ids) - sum(len(b) for b in todo),
        desc=desc,
        disable=not (progress and is_main_process()),
    )
    for batch in todo:
        if stop_after is not None and len(done) >= stop_after:
            break
        records = compute(batch)
        if len(records) != len(batch):
            raise RuntimeError(f"compute returned {len(records)} records for {len(batch)} cases")
        for case_id, record in zip(batch, records, strict=True):
            if not folder.finished(case_id):
                folder.save(case_id, dict(record, case=case_id))
                done.append(case_id)
        bar.update(len(batch))
    bar.close()
    return done
