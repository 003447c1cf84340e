"""The library's import graph: no cycle, and no import from a later pipeline stage.

Every ``import`` in every module counts, including the ones inside functions (a lazy import
hides a cycle from Python, not from a reader). Stages, in the order imports may flow
(docs/design.md): the root modules below, then data, phantom, evaluate, models, training,
explain, localize, ensembles, plots, runs. A module may import its own stage and earlier
ones; ``cli`` may import anything.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

import pneumoloc

LIB = Path(pneumoloc.__file__).parent
ROOT_MODULES = {"pneumoloc", "pneumoloc.environment", "pneumoloc.storage", "pneumoloc.registry"}
STAGES = ("data", "phantom", "evaluate", "models", "training", "explain", "localize", "ensembles", "plots",
          "runs")
ANYTHING = {"pneumoloc.cli"}


def module_name(path: Path) -> str:
    parts = path.relative_to(LIB.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(LIB.rglob("*.py"))}


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """Modules of pneumoloc that ``name`` imports, anywhere in its source."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name in known}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                src = ".".join(base + ([node.module] if node.module else []))
            else:
                src = node.module or ""
            if src not in known:
                continue
            subs = {f"{src}.{a.name}" for a in node.names} & known
            out |= subs if subs else {src}
            if len(subs) < len(node.names):
                out.add(src)
    out.discard(name)
    return out


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {name: imports_of(name, path, set(mods)) for name, path in mods.items()}


def rank(module: str) -> int:
    if module in ROOT_MODULES:
        return 0
    stage = module.split(".")[1]
    if stage not in STAGES:
        raise AssertionError(f"{module} is neither a root module nor in a stage subpackage {STAGES}: "
                             "move it into the stage it serves (docs/design.md)")
    return 1 + STAGES.index(stage)


def find_cycle(g: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules (first == last), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(g.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for start in sorted(g):
        if start not in state and (found := visit(start)):
            return found
    return None


def test_every_module_sits_in_a_stage_or_the_root():
    for name in modules():
        if name not in ANYTHING:
            rank(name)


def test_no_import_cycle():
    cycle = find_cycle(graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_no_module_imports_a_later_stage():
    upward = [f"{a} imports {b}" for a, deps in sorted(graph().items()) if a not in ANYTHING
              for b in sorted(deps) if b not in ANYTHING and rank(b) > rank(a)]
    assert not upward, "imports against the stage order " + " -> ".join(STAGES) + ":\n" + "\n".join(upward)


def test_the_checks_see_a_cycle_and_an_upward_import():
    """The walker itself: a planted cycle and a planted upward edge are reported."""
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    assert rank("pneumoloc.plots.save") > rank("pneumoloc.data.tables")
    with pytest.raises(AssertionError, match="stage subpackage"):
        rank("pneumoloc.utils")


def test_relative_imports_resolve_to_modules(tmp_path):
    """``from ..data import tables`` is an edge to the module data.tables, not to the package."""
    known = {"pneumoloc.data", "pneumoloc.data.tables", "pneumoloc.localize", "pneumoloc.localize.x"}
    f = tmp_path / "x.py"
    f.write_text("from ..data import tables\nfrom ..data.tables import load_tables\n")
    assert imports_of("pneumoloc.localize.x", f, known) == {"pneumoloc.data.tables"}
