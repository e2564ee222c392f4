"""The import graph of `cosjax/`: acyclic, each module importable on its own, imports going one way.

The graph is read statically (`ast`) from every module under `cosjax/`: an edge A -> B for each
`import cosjax.b` / `from cosjax.b import x` / `from cosjax import b` in A. Lazy imports (inside a
function) count as edges too: a cycle through a lazy import is still two modules that each need the
other, only hidden until a call. Imports under `if TYPE_CHECKING:` do not count (they never run),
nor the implicit import of a package's `__init__` by its submodules. `from pkg import name` is an
edge to `pkg.name` when that is a module, else to `pkg`.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "cosjax"

# Who may not import whom: (importer prefix, forbidden prefixes, why). A prefix names a module and
# everything below it ("cosjax.models" is cosjax/models/*). The README's layout section states these.
RULES: list[tuple[str, tuple[str, ...], str]] = [
    (
        "cosjax.models",
        (
            "cosjax.weights",
            "cosjax.sampling",
            "cosjax.pipeline",
            "cosjax.text",
            "cosjax.analysis",
            "cosjax.data",
        ),
        "the models are pure computation: no I/O, no sampler, no pipeline",
    ),
    (
        "cosjax.sampling",
        ("cosjax.weights.convert", "cosjax.weights.read", "cosjax.pipeline", "cosjax.text", "cosjax.cli"),
        "the sampler runs a loaded model; it does not load or convert weights",
    ),
    (
        "cosjax.weights",
        ("cosjax.sampling", "cosjax.pipeline", "cosjax.text", "cosjax.analysis", "cosjax.data", "cosjax.cli"),
        "weights only read and write parameter trees; the layers above use them",
    ),
    ("cosjax.configs", ("cosjax.",), "configs are data: they import nothing of cosjax"),
    ("cosjax.weights.names", ("cosjax.",), "file names are data"),
    ("cosjax.weights.tensors", ("cosjax.",), "tensor reading stands alone"),
    (
        "cosjax.weights.keymap",
        ("cosjax.weights.read", "cosjax.weights.convert", "cosjax.weights.sources"),
        "",
    ),
    ("cosjax.weights.read", ("cosjax.weights.convert",), "readers never need the writer"),
    ("cosjax.weights.loading", ("cosjax.weights.convert",), "loading a DiT never needs the writer"),
]
# Lazy edges that close a cycle today, each to be removed by moving the code that needs it (no new
# entries: a new cycle is fixed, not listed).
KNOWN_LAZY_CYCLE_EDGES: dict[tuple[str, str], str] = {}
# The library never imports the scripts around it (experiments/, convert/, benchmarks/, tests/), except
# the command line, which runs the experiments.
OUTSIDE = ("experiments", "convert", "benchmarks", "tests")
RUNS_EXPERIMENTS = ("cosjax.cli",)


def module_names() -> list[str]:
    names = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return sorted(names)


MODULES = module_names()


def _file(module: str) -> Path:
    base = ROOT.joinpath(*module.split("."))
    return base / "__init__.py" if base.is_dir() else base.with_suffix(".py")


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(module: str) -> list[tuple[str, bool, int]]:
    """(imported top-level name, lazy, line) for every import statement in `module`."""
    tree = ast.parse(_file(module).read_text(), str(_file(module)))
    found = []

    def visit(node: ast.AST, lazy: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for other in child.orelse:
                    visit(other, lazy)
                continue
            inner = lazy or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
            if isinstance(child, ast.Import):
                found.extend((alias.name, lazy, child.lineno) for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                if child.level:  # relative: resolve against this module's package
                    package = (
                        module.split(".") if _file(module).name == "__init__.py" else module.split(".")[:-1]
                    )
                    base = ".".join(
                        package[: len(package) - child.level + 1] + ([child.module] if child.module else [])
                    )
                else:
                    base = child.module or ""
                for alias in child.names:
                    full = f"{base}.{alias.name}"
                    found.append((full if full in MODULES else base, lazy, child.lineno))
            visit(child, inner)

    visit(tree, False)
    return found


def import_graph(lazy: bool = True) -> dict[str, set[str]]:
    """module -> the cosjax modules it imports (lazy ones too unless `lazy=False`)."""
    graph = {}
    for module in MODULES:
        targets = set()
        for name, is_lazy, _ in _imports(module):
            if is_lazy and not lazy:
                continue
            # `import cosjax.a.b` imports the deepest module named; unknown tails are attributes
            parts = name.split(".")
            while parts and ".".join(parts) not in MODULES:
                parts.pop()
            if parts and ".".join(parts) != module:
                targets.add(".".join(parts))
        graph[module] = targets
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of `graph` as [a, b, ..., a], or None."""
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []

    def dfs(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := dfs(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := dfs(node)):
            return cycle
    return None


def _under(module: str, prefix: str) -> bool:
    return module == prefix.rstrip(".") or module.startswith(prefix if prefix.endswith(".") else prefix + ".")


def test_the_graph_is_read():
    graph = import_graph()
    assert len(MODULES) > 40 and "cosjax.weights.keymap" in MODULES
    assert "cosjax.weights.tensors" in graph["cosjax.weights.keymap"]
    assert "cosjax.weights.read" in graph["cosjax.text"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


@pytest.mark.parametrize("lazy", [False, True], ids=["module-level", "with-lazy-imports"])
def test_no_import_cycles(lazy):
    graph = import_graph(lazy)
    for a, b in KNOWN_LAZY_CYCLE_EDGES:
        graph[a].discard(b)
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_import_direction():
    graph = import_graph()
    broken = [
        f"{module} imports {target} ({why or 'see RULES'})"
        for importer, forbidden, why in RULES
        for module, targets in graph.items()
        if _under(module, importer)
        for target in targets
        if any(_under(target, f) for f in forbidden)
    ]
    assert not broken, "\n".join(broken)


def test_the_library_never_imports_the_scripts_around_it():
    broken = [
        f"{module}:{line} imports {name}"
        for module in MODULES
        if module not in RUNS_EXPERIMENTS
        for name, _, line in _imports(module)
        if name.split(".")[0] in OUTSIDE
    ]
    assert not broken, "\n".join(broken)


def test_every_module_imports_on_its_own():
    """Each module imported first, into a fresh process holding no cosjax module, in sorted order.

    One process preloads the heavy third-party libraries, then forks a child per module (a fresh
    interpreter per module would spend minutes importing jax again and again); a child imports its
    module and exits, so registrations a module makes (tfds builders, ...) never meet a second copy.
    """
    child = textwrap.dedent(
        """
        import importlib, os, sys, traceback, warnings
        warnings.filterwarnings("ignore")  # jax warns that fork() and threads do not mix: we only import
        for lib in ("numpy", "jax", "jax.numpy", "flax.linen", "tensorflow_datasets"):
            try:
                importlib.import_module(lib)
            except ImportError:
                pass
        assert not [m for m in sys.modules if m == "cosjax" or m.startswith("cosjax.")]
        failed = []
        for name in sys.argv[1:]:
            r, w = os.pipe()
            pid = os.fork()
            if pid == 0:
                os.close(r)
                try:
                    importlib.import_module(name)
                    code = 0
                except BaseException:
                    os.write(w, traceback.format_exc(limit=-4).encode())
                    code = 1
                os._exit(code)
            os.close(w)
            with os.fdopen(r) as pipe:
                message = pipe.read()
            _, status = os.waitpid(pid, 0)
            if status:
                failed.append(f"{name}: {message or status}")
        print("\\n".join(failed))
        sys.exit(1 if failed else 0)
        """
    )
    run = subprocess.run(
        [sys.executable, "-c", child, *MODULES], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
