"""The paper's experiments, one module per experiment.

An experiment is a module of this package that declares `NAME = "..."` (its `cosjax run` name, a
string literal) and defines `Config` and `run(config, model, out, progress, stop_after)`. Adding the
module is all it takes: `EXPERIMENTS` is read from the package's sources (without importing them,
so building the command line stays cheap) and the CLI's choices are its keys. Modules without
`NAME` (`common`, `demo`, `train_toy`, `toy_preset`) are helpers and entry points, not experiments.

`cosjax run NAME [--model PATH] [--data SOURCE] [--out DIR] [key=value ...]` dispatches here.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path
from types import ModuleType


def declared_name(file: Path) -> str | None:
    """The string a module file assigns to `NAME` at top level; None if it assigns none."""
    for node in ast.parse(file.read_text(), str(file)).body:
        if isinstance(node, ast.Assign):
            targets, value = node.targets, node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets, value = [node.target], node.value
        else:
            continue
        if any(isinstance(t, ast.Name) and t.id == "NAME" for t in targets):
            if not (isinstance(value, ast.Constant) and isinstance(value.value, str)):
                raise ValueError(
                    f"{file}: NAME must be a string literal (the experiment's `cosjax run` name)"
                )
            return value.value
    return None


def discover(folder: Path, package: str) -> dict[str, str]:
    """{experiment name: module path} of the modules in `folder` (package `package`) declaring `NAME`."""
    found: dict[str, str] = {}
    for file in sorted(folder.glob("*.py")):
        name = declared_name(file)
        if name is None:
            continue
        if name in found:
            raise ValueError(
                f"experiment name {name!r} is declared by both {found[name]} and {package}.{file.stem}"
            )
        found[name] = f"{package}.{file.stem}"
    return found


EXPERIMENTS: dict[str, str] = discover(Path(__file__).parent, __name__)


def get(name: str) -> ModuleType:
    """The module of experiment `name` (KeyError listing the known names)."""
    if name not in EXPERIMENTS:
        raise KeyError(f"unknown experiment {name!r}; known: {', '.join(EXPERIMENTS)}")
    module = importlib.import_module(EXPERIMENTS[name])
    missing = [attr for attr in ("Config", "run") if not hasattr(module, attr)]
    if missing:
        raise TypeError(f"experiment {name!r} ({module.__name__}) defines no {' and no '.join(missing)}")
    return module
