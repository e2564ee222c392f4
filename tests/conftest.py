"""Shared fixtures: `repo` (a tiny Diffusers-layout Wan2.2 repo; skips without torch) and `bucket`
(gs:// served from a local folder). Nothing torch-dependent is imported at module level, so the
JAX-only tests run without torch; the helpers tests share live in `tests/helpers/`."""

from __future__ import annotations

import os
import sys
import types
from pathlib import Path

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import pytest  # noqa: E402
from helpers.xla import configure  # noqa: E402

_CREATED_CACHE = configure()  # before any test imports JAX; see tests/helpers/xla.py


def pytest_sessionfinish(session):
    import shutil

    if _CREATED_CACHE and not hasattr(session.config, "workerinput"):  # the controller's own folder
        shutil.rmtree(_CREATED_CACHE, ignore_errors=True)


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    """A tiny Diffusers-layout Wan2.2 I2V A14B repo with every component (skips without torch)."""
    from helpers.torch_refs import write_diffusers_repo

    return write_diffusers_repo(tmp_path_factory.mktemp("components") / "repo")


@pytest.fixture
def bucket(tmp_path, monkeypatch):
    """`gs://...` served from `tmp_path/gcs/...`: fsspec's `gcs` implementation (gcsfs in real use)
    is replaced by a local folder, so every read and write of a gs:// URL goes through exactly the code
    a real one does (cosjax.paths -> etils.epath's fsspec backend -> fsspec.filesystem("gcs")).

    Orbax reads gs:// through tensorstore's own GCS driver, which no stand-in reaches offline: its
    `load_pytree` is wrapped to check that the URL arrives intact and to read the same folder locally.
    """
    import fsspec  # noqa: F401  (loads fsspec.registry)
    from etils.epath import backend, gpath
    from fsspec.implementations.dirfs import DirFileSystem
    from fsspec.implementations.local import LocalFileSystem
    from orbax.checkpoint.experimental import v1 as ocp

    root = tmp_path / "gcs"
    root.mkdir()

    class LocalBucket(DirFileSystem):
        protocol = ("gs", "gcs")

        def __init__(self, *args, finalize_on_close=False, **kwargs):  # gcsfs's option, as epath passes it
            super().__init__(path=str(root), fs=LocalFileSystem(), **kwargs)

        def _join(self, path):
            if isinstance(path, str):
                path = path.removeprefix("gs://")
            return super()._join(path)

    monkeypatch.setitem(sys.modules["fsspec.registry"]._registry, "gcs", LocalBucket)
    monkeypatch.setattr(gpath, "_is_tf_installed", lambda: False)  # epath's gs:// backend: fsspec
    backend.fsspec_backend._get_filesystem.cache_clear()
    read, orbax_urls = ocp.load_pytree, []

    def load_pytree(path, *args, **kwargs):
        if isinstance(path, Path):  # a local path: orbax reads it itself
            return read(path, *args, **kwargs)
        assert str(path).startswith("gs://bucket/"), path  # a URL, intact (not collapsed to gs:/)
        orbax_urls.append(str(path))
        return read(root / str(path).removeprefix("gs://"), *args, **kwargs)

    monkeypatch.setattr(ocp, "load_pytree", load_pytree)
    yield types.SimpleNamespace(root=root, orbax_urls=orbax_urls)
    backend.fsspec_backend._get_filesystem.cache_clear()
