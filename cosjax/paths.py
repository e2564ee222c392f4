"""User paths: one normalisation for every public entry that takes a path, and safe destinations.

`user_path` is the only way a path given by a user becomes a path object here:

* a local path becomes an absolute `pathlib.Path` (`~` expanded). Orbax refuses relative paths, and
  a path kept relative would change meaning when the working directory does.
* a URL (`gs://bucket/x`, also `s3://`, `az://`, `hf://`) stays a URL, as an `etils.epath.Path`,
  whose backend reads and writes it: TensorFlow's gfile when TensorFlow is installed, else fsspec
  (`gs://` needs `gcsfs`, the `gcs` extra). `pathlib.Path("gs://b/x")` collapses to `gs:/b/x`, so
  never build a `Path` from a user's string.

Writers never remove what they did not create: `check_destination` refuses a destination that is,
contains or lies inside one of the sources, and a non-empty folder without the writer's own marker
file (the format's metadata file). Folders are built in a hidden sibling, `.NAME.tmp-HOST-PID`,
renamed into place when complete; `clean_stale_temps` removes those left by writers that died
(same host, PID no longer running), never a live writer's.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import re
import shutil
import socket
import uuid
from collections.abc import Iterable, Iterator

from etils import epath

AnyPath = pathlib.Path | epath.Path
URL_SCHEMES = ("gs", "s3", "az", "hf")  # what etils.epath reads and writes
_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_TEMP = re.compile(r"^\.(?P<name>.+)\.(?:tmp|old)-(?:(?P<host>.+)-)?(?P<pid>\d+)$")  # temp_sibling
_TEMP_FILE = re.compile(r"^\..+\.\d+-[0-9a-f]{8}(\.[\w.]+)?$")  # new_temp_file


def is_url(path: str | os.PathLike) -> bool:
    """True for 'scheme://...' strings and epath URL paths."""
    return _URL.match(os.fspath(path)) is not None


def user_path(path: str | os.PathLike) -> AnyPath:
    """A user's path, normalised: local -> absolute `pathlib.Path`; URL -> `epath.Path`, intact.

    Raises:
      ValueError: a URL of a scheme epath cannot read (the message lists the supported ones).
    """
    text = os.fspath(path)
    match = _URL.match(text)
    if match is None:
        return pathlib.Path(os.path.abspath(os.path.expanduser(text)))
    if match.group(1) not in URL_SCHEMES:
        raise ValueError(
            f"{text}: unsupported URL scheme {match.group(1)!r}; use a local path or one of "
            + ", ".join(f"{s}://" for s in URL_SCHEMES)
        )
    return epath.Path(text)


def is_local(path: AnyPath) -> bool:
    """True for a local path (a `pathlib.Path`), False for a URL path (`epath.Path`)."""
    return isinstance(path, pathlib.Path)


def require_local(path: AnyPath, what: str, fix: str) -> pathlib.Path:
    """`path` itself when local; a ValueError naming `what` and the `fix` for a URL."""
    if not is_local(path):
        raise ValueError(f"{path}: {what} must be a local path; {fix}")
    return path


# ----------------------------------------------------------------------------------------------
# Destinations


def _inside(a: pathlib.Path, b: pathlib.Path) -> bool:
    """True when `a` is `b` or lies inside it (symlinks resolved)."""
    a, b = a.resolve(), b.resolve()
    return a == b or b in a.parents


def _our_temp(name: str) -> bool:
    """A hidden work file or folder of a cosjax writer (`temp_sibling`, `new_temp_file`)."""
    return _TEMP.match(name) is not None or _TEMP_FILE.match(name) is not None


def check_destination(
    dst: AnyPath,
    marker: str,
    overwrite: bool = False,
    sources: Iterable[str | os.PathLike] = (),
    what: str = "destination",
) -> None:
    """Refuses a destination whose writing could lose data we did not create.

    Allowed: an absent `dst`, an empty folder (our own hidden temp files ignored), or, with
    `overwrite`, a folder holding `marker` (a folder this writer made, which it may replace).

    Args:
      dst: the folder to be written or replaced.
      marker: the file that tells a folder of ours (e.g. `cosjax_dit.json`, `toy.json`).
      overwrite: replacing a folder of ours is allowed.
      sources: paths the writer reads; `dst` must not be, contain or lie inside any of them.
      what: how the user named `dst` (e.g. "DST", "--export"), for the messages.

    Raises:
      ValueError: `dst` is, contains or lies inside a source.
      FileExistsError: `dst` is a file, a non-empty folder without `marker`, or (without
        `overwrite`) a folder of ours.
    """
    for src in sources:
        src = user_path(src)
        if not (is_local(src) and is_local(dst)):
            if str(src) == str(dst) or str(src).startswith(str(dst).rstrip("/") + "/"):
                raise ValueError(f"{what} {dst} is or contains the source {src}; choose another folder")
            continue
        if _inside(src, dst):
            relation = "is" if src.resolve() == dst.resolve() else "contains"
            raise ValueError(
                f"{what} {dst} {relation} the source {src}; writing it would destroy the source: "
                "choose a folder outside the source"
            )
        if _inside(dst, src):
            raise ValueError(f"{what} {dst} lies inside the source {src}; choose a folder outside the source")
    if not dst.exists():
        return
    if not dst.is_dir():
        raise FileExistsError(f"{what} {dst} is a file, not a folder; choose another path")
    if (dst / marker).is_file():
        if not overwrite:
            raise FileExistsError(f"{dst} already exists; pass overwrite=True (--overwrite) to replace it")
        return
    if any(not _our_temp(p.name) for p in dst.iterdir()):
        raise FileExistsError(
            f"{what} {dst} is a non-empty folder that cosjax did not write (no {marker}); refusing to "
            "write into it or replace it: choose a new or empty folder"
        )


def temp_sibling(dst: pathlib.Path, kind: str = "tmp") -> pathlib.Path:
    """`.NAME.KIND-HOST-PID` beside `dst`: this process's private work folder for `dst`."""
    return dst.parent / f".{dst.name}.{kind}-{socket.gethostname()}-{os.getpid()}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def clean_stale_temps(dst: pathlib.Path) -> list[pathlib.Path]:
    """Removes the `temp_sibling`s of `dst` left by dead writers; returns what it removed.

    Only this host's (or host-less `.NAME.tmp-PID`) folders whose PID no longer runs are removed, and
    never this process's own: a live writer's work is never touched, nor another host's on a shared
    file system (that host cleans its own).
    """
    if not dst.parent.is_dir():
        return []
    removed, host = [], socket.gethostname()
    for entry in dst.parent.iterdir():
        m = _TEMP.match(entry.name)
        if m is None or m["name"] != dst.name or m["host"] not in (None, host):
            continue
        pid = int(m["pid"])
        if pid == os.getpid() or _alive(pid):
            continue
        shutil.rmtree(entry, ignore_errors=True) if entry.is_dir() else entry.unlink(missing_ok=True)
        removed.append(entry)
    return removed


def publish_folder(tmp: pathlib.Path, dst: pathlib.Path) -> None:
    """Renames the finished `tmp` to `dst`; an existing `dst` (checked ours by `check_destination`)
    is moved aside first and removed only once `tmp` is in place."""
    if dst.exists():
        old = temp_sibling(dst, "old")
        dst.rename(old)
        tmp.rename(dst)
        shutil.rmtree(old)
    else:
        tmp.rename(dst)


@contextlib.contextmanager
def building(dst: pathlib.Path) -> Iterator[pathlib.Path]:
    """This process's fresh work folder for `dst` (`temp_sibling`; dead writers' ones are removed
    first), renamed to `dst` (`publish_folder`) when the block exits cleanly, removed on any error.
    Call `check_destination` first: an existing `dst` is replaced."""
    clean_stale_temps(dst)
    tmp = temp_sibling(dst)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
        publish_folder(tmp, dst)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


# ----------------------------------------------------------------------------------------------
# Files


def new_temp_file(folder: pathlib.Path, name: str, suffix: str = ".tmp") -> pathlib.Path:
    """Creates an empty, uniquely named hidden file `.NAME.PID-RANDOM SUFFIX` in `folder`.

    Created with mode 0o666 so the kernel applies the umask, as for any file a program opens
    (`tempfile.mkstemp` would make it 0600 whatever the umask).
    """
    path = folder / f".{name}.{os.getpid()}-{uuid.uuid4().hex[:8]}{suffix}"
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    return path


@contextlib.contextmanager
def staged_file(path: AnyPath, suffix: str = ".tmp") -> Iterator[pathlib.Path]:
    """A local file to write `path`'s content into; it becomes `path` when the block exits cleanly.

    Local `path`: a hidden temp file in the same folder, renamed over `path` (atomic; the mode follows
    the umask). URL `path`: a local temp file uploaded to `path` (an object store publishes an object
    only once its upload is complete). On an error the temp file is deleted and `path` untouched.
    """
    import tempfile

    if is_local(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = new_temp_file(path.parent, path.name, suffix)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = new_temp_file(pathlib.Path(tempfile.gettempdir()), "cosjax-upload", suffix)
    try:
        yield tmp
        if is_local(path):
            os.replace(tmp, path)
        else:
            path.write_bytes(tmp.read_bytes())
    finally:
        tmp.unlink(missing_ok=True)


def write_atomic(path: AnyPath, data: bytes | str) -> None:
    """Writes `data` to `path` whole or not at all (`staged_file`).

    Local: a temporary file in the same folder, renamed over `path`; its mode follows the umask, as
    for any other file (0644 under the usual 022). URL: one upload, published when complete.
    """
    with staged_file(path) as tmp:
        tmp.write_bytes(data.encode() if isinstance(data, str) else data)


@contextlib.contextmanager
def local_file(path: AnyPath) -> Iterator[pathlib.Path]:
    """`path` itself when local, else a local temporary copy (for readers that need a file name,
    such as ffmpeg), deleted when the block exits."""
    import tempfile

    if is_local(path):
        yield path
        return
    tmp = new_temp_file(pathlib.Path(tempfile.gettempdir()), "cosjax-download", "".join(path.suffixes))
    try:
        tmp.write_bytes(path.read_bytes())
        yield tmp
    finally:
        tmp.unlink(missing_ok=True)
