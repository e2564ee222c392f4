"""Shared fixtures. Importing nothing beyond numpy/pytest here keeps the JAX-only tests runnable
without torch; the helpers they share live in `tests/helpers/` (torch ones in `helpers.torch_refs`)."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import pytest  # noqa: E402


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    """A tiny Diffusers-layout Wan2.2 I2V A14B repo with every component (skips without torch)."""
    from helpers.torch_refs import write_diffusers_repo

    return write_diffusers_repo(tmp_path_factory.mktemp("components") / "repo")
