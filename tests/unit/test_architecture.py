"""The package's shape (DESIGN.md: data flows one way): no import circle anywhere in src/edgecam, counting
every import statement (module level, inside functions and in `if TYPE_CHECKING:` blocks: a circle through
annotations is still two modules that must know each other), no import from a lower floor to a higher one
(LAYERS; docs/architecture.md draws them), and no module importing another's private names, in src/ or
benchmarks/.""" 

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src"


def _module_name(path: Path) -> str:
    rel = path.relative_to(SRC).with_suffix("")
    parts = list(rel.parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in (SRC / "edgecam").rglob("*.py")}


def _imports(path: Path) -> list[tuple[str, list[str]]]:
    """(imported module, names taken from it) for every import statement of the file."""
    inside = path.is_relative_to(SRC)
    package = "" if not inside else _module_name(path) if path.name == "__init__.py" else _module_name(path).rpartition(".")[0]
    out = []
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, []) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([node.module] if node.module else []))
            out.append((base, [a.name for a in node.names]))
    return out


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for mod, path in MODULES.items():
        for target, names in _imports(path):
            if not target.startswith("edgecam"):
                continue
            subs = [f"{target}.{n}" for n in names if f"{target}.{n}" in MODULES]  # `from edgecam.bench import outputs`
            for dep in subs or [target]:
                if dep in MODULES and dep != mod:
                    graph[mod].add(dep)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_circle_in_the_package() -> None:
    graph = _graph()
    assert sum(len(d) for d in graph.values()) > 100  # the graph really was read
    assert _cycles(graph) == []


#: the floors, ground first: a module imports only from its own floor or below. A new top-level module or package
#: must be given a floor here (docs/architecture.md says what each holds)
LAYERS: tuple[tuple[str, ...], ...] = (
    ("edgecam", "edgecam.errors", "edgecam.textsafe", "edgecam.quiet"),  # quiet: the libraries' log lines off the terminal (standard library only)
    ("edgecam.registry", "edgecam.perturb", "edgecam.specs", "edgecam.cache", "edgecam.stages", "edgecam.safe_io"),
    ("edgecam.runtimes",),  # the device side's adapters: standard library + numpy
    ("edgecam.devices", "edgecam.explain", "edgecam.models"),
    ("edgecam.data", "edgecam.exporters"),
    ("edgecam.config",),
    ("edgecam.bench",),
    ("edgecam.cli",),
)


def _prefix(module: str) -> str:
    """The longest LAYERS entry `module` falls under."""
    return max((p for floor in LAYERS for p in floor if module == p or module.startswith(p + ".")), key=len)


def _floor(module: str) -> int:
    return next(i for i, floor in enumerate(LAYERS) if _prefix(module) in floor)


def test_no_import_runs_up_a_floor() -> None:
    graph = _graph()
    assert [m for m in MODULES if _prefix(m) == "edgecam" and m != "edgecam"] == []  # every module is on a floor of its own
    upward = sorted(f"{a} (floor {_floor(a)}) imports {b} (floor {_floor(b)})" for a, deps in graph.items() for b in deps if _floor(b) > _floor(a))
    assert upward == []


def test_the_floor_rule_sees_an_upward_import() -> None:
    assert _floor("edgecam.bench.studies.lowbit") == 6 and _floor("edgecam.runtimes.base") == 2 and _floor("edgecam") == 0
    assert _floor("edgecam.explain.cams") < _floor("edgecam.bench.sweep")


def test_the_cycle_finder_finds_a_circle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_private_names_across_modules() -> None:
    offenders = []
    for path in [*MODULES.values(), *(ROOT / "benchmarks").glob("*.py")]:
        for target, names in _imports(path):
            if target.startswith("edgecam"):
                offenders += [f"{path.relative_to(ROOT)}: from {target} import {n}" for n in names if n.startswith("_") and not n.startswith("__")]
    assert offenders == []
