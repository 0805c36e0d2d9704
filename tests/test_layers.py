"""The package stands on floors (DESIGN.md): a module imports only from its own floor or the
floors below it, the imports form no cycle, and stages never import each other. Every import is
walked, those inside functions and under TYPE_CHECKING included."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "compress"

# the first dotted part under compress -> floor
FLOORS = {
    "__init__": 1, "errors": 1, "common": 1,
    "config": 2, "records": 2,
    "tasks": 3, "models": 3, "data": 3,
    "train": 4, "export": 4, "quant": 4, "bench": 4, "artifacts": 4, "stage_reports": 4,
    "stages": 5, "report": 5, "bundle": 5, "gates": 5,
    "engine": 6, "search": 6,
    "cli": 7,
}
STAGE_SHARED = {"compress.stages.base"}  # what every stage module may import from its room


def _module_name(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """Every compress module ``path`` imports (``from a import b`` counts a.b when it is one)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("compress"))
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if not node.module.startswith("compress"):
                continue
            for a in node.names:
                sub = f"{node.module}.{a.name}"
                found.add(sub if sub in MODULES else node.module)
    return found


MODULES = {_module_name(p): p for p in PKG.rglob("*.py")}
GRAPH = {name: _imports(path) for name, path in MODULES.items()}


def floor(module: str) -> int:
    parts = module.split(".")
    return FLOORS[parts[1] if len(parts) > 1 else "__init__"]


def test_every_module_has_a_floor():
    unknown = sorted(m for m in MODULES if m != "compress" and m.split(".")[1] not in FLOORS)
    assert unknown == []


def test_no_import_runs_up_a_floor():
    upward = sorted(f"{m} (floor {floor(m)}) imports {d} (floor {floor(d)})"
                    for m, deps in GRAPH.items() for d in deps if floor(d) > floor(m))
    assert upward == []


def test_the_imports_form_no_cycle():
    state: dict[str, int] = {}  # 1 on the stack, 2 done
    cycles: list[list[str]] = []

    def visit(m: str, stack: list[str]) -> None:
        state[m] = 1
        stack.append(m)
        for d in sorted(GRAPH.get(m, ())):
            if d == m or d not in GRAPH:
                continue
            if state.get(d) == 1:
                cycles.append(stack[stack.index(d):] + [d])
            elif d not in state:
                visit(d, stack)
        stack.pop()
        state[m] = 2

    for m in sorted(GRAPH):
        if m not in state:
            visit(m, [])
    assert cycles == []


def test_stages_never_import_each_other():
    stage_modules = {m for m in MODULES if m.startswith("compress.stages.")} - STAGE_SHARED
    crossings = sorted(f"{m} imports {d}" for m in stage_modules for d in GRAPH[m]
                       if d == "compress.stages" or (d in stage_modules and d != m))
    assert crossings == []


def test_the_bundle_runner_imports_nothing_from_the_package():
    # it is copied as one standalone file into every bundle
    assert GRAPH["compress.bundle.runner"] == set()


@pytest.mark.parametrize("bad, expected", [("compress.engine.run", 6), ("compress.errors", 1)])
def test_floor_of_a_module(bad, expected):
    assert floor(bad) == expected


def test_the_walker_sees_imports_inside_functions_and_type_checking(tmp_path):
    src = ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from compress.cli import x\n"
           "def f():\n    import compress.engine.run\n")
    p = tmp_path / "m.py"
    p.write_text(src)
    assert _imports(p) == {"compress.cli", "compress.engine.run"}


def test_the_config_accepts_exactly_the_registered_tasks():
    from compress.config.pipeline import TASK_NAMES
    from compress.tasks import TASKS

    assert tuple(TASKS) == TASK_NAMES
