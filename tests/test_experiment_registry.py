"""The experiment registry is the one list of experiment names: a new experiment is one module."""

from __future__ import annotations

import ast
import sys
import textwrap
from pathlib import Path

import pytest

import experiments
from cosjax.cli import build_parser
from cosjax.cli import main as cli_main

PACKAGE = Path(experiments.__file__).parent


def run_choices(parser) -> list[str]:
    sub = next(a for a in parser._subparsers._group_actions if a.dest == "command")
    return list(next(a for a in sub.choices["run"]._actions if a.dest == "name").choices)


def defines(file: Path) -> set[str]:
    """Top-level functions and classes of a module file."""
    body = ast.parse(file.read_text()).body
    return {n.name for n in body if isinstance(n, ast.FunctionDef | ast.ClassDef)}


def test_cli_choices_are_the_registry():
    assert run_choices(build_parser()) == list(experiments.EXPERIMENTS)
    assert set(experiments.EXPERIMENTS) >= {"trajectory", "noise-perturbation", "ensemble"}


def test_every_experiment_module_is_registered():
    """Each experiments/*.py defining `Config` and `run` is registered under its `NAME`, and each
    registered module imports with both."""
    modules = {f"experiments.{f.stem}" for f in PACKAGE.glob("*.py") if {"Config", "run"} <= defines(f)}
    assert modules == set(experiments.EXPERIMENTS.values())
    for name, path in experiments.EXPERIMENTS.items():
        module = experiments.get(name)
        assert module.__name__ == path and module.NAME == name
        assert callable(module.run) and isinstance(module.Config, type)
    with pytest.raises(KeyError, match="known: .*trajectory"):
        experiments.get("no-such-experiment")


NEW_EXPERIMENT = '''
"""A new experiment: nothing else in the repository names it."""
import dataclasses
import json
from pathlib import Path

NAME = "new-probe"


@dataclasses.dataclass(frozen=True)
class Config:
    strength: float = 1.0
    data: str = "toy"


def run(config, model=None, out=None, progress=True, stop_after=None):
    Path(out).mkdir(parents=True)
    (Path(out) / "results.json").write_text(json.dumps({"strength": config.strength}))
    return {"table": f"probed at {config.strength}"}
'''


def test_one_new_module_is_a_new_experiment(tmp_path, monkeypatch, capsys):
    """A module declaring NAME, Config and run in a package folder is discovered, and once in the
    registry `cosjax run NAME key=value` dispatches to it."""
    pkg = tmp_path / "more_experiments"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "helper.py").write_text("def run():\n    pass\n")  # no NAME: not an experiment
    (pkg / "new_probe.py").write_text(textwrap.dedent(NEW_EXPERIMENT))
    found = experiments.discover(pkg, "more_experiments")
    assert found == {"new-probe": "more_experiments.new_probe"}

    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(experiments, "EXPERIMENTS", {**experiments.EXPERIMENTS, **found})
    assert "new-probe" in run_choices(build_parser())
    out = tmp_path / "run"
    assert cli_main(["run", "new-probe", "--out", str(out), "strength=2.5"]) == 0
    assert (out / "results.json").read_text() == '{"strength": 2.5}'
    assert "probed at 2.5" in capsys.readouterr().out
    sys.modules.pop("more_experiments.new_probe", None)


def test_discovery_refuses_ambiguous_names(tmp_path):
    (tmp_path / "a.py").write_text('NAME = "same"\n')
    (tmp_path / "b.py").write_text('NAME = "same"\n')
    with pytest.raises(ValueError, match="'same' is declared by both pkg.a and pkg.b"):
        experiments.discover(tmp_path, "pkg")
    (tmp_path / "b.py").write_text('NAME = "x" + "y"\n')
    with pytest.raises(ValueError, match="NAME must be a string literal"):
        experiments.discover(tmp_path, "pkg")
