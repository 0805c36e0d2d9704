"""The package stands on floors (compress/layers.py holds the map; the README shows it): a module
imports from the floors below its own, and on its own floor from its own room or from a room the
map names; no module outside compress/stages/ imports a single stage (only the registry and the
base); stages never import each other; the imports form no cycle. Every import is walked: those
inside functions and under TYPE_CHECKING, and relative ones (``from ..engine import run``).

The checker is tested too: each leak the house has had, put back into a synthetic module, is
reported."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from compress.layers import (
    FLOORS,
    REGISTRY,
    ROOMS,
    SIDEWAYS,
    STAGES_ROOM,
    floor_map_text,
    floor_of,
    room_of,
)

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "compress"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PKG.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_module_name(p): p for p in PKG.rglob("*.py")}


def imports_of(source: str, module: str, is_package: bool = False,
               known: set[str] | frozenset[str] = frozenset()) -> set[str]:
    """Every ``compress`` module that ``source`` (the text of ``module``) imports. ``from a import
    b`` counts ``a.b`` when that is a module in ``known``, else ``a``. Relative imports resolve
    from the module's package (a package's ``__init__`` is its own package)."""
    package = module.split(".") if is_package else module.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "compress")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                up = len(package) - (node.level - 1)
                if up < 1:
                    raise ValueError(f"{module}: relative import above the top package")
                base = ".".join(package[:up] + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            if base.split(".")[0] != "compress":
                continue
            for a in node.names:
                sub = f"{base}.{a.name}"
                found.add(sub if sub in known else base)
    return found


def _graph() -> dict[str, set[str]]:
    return {name: imports_of(path.read_text(), name, path.name == "__init__.py", set(MODULES))
            for name, path in MODULES.items()}


GRAPH = _graph()


def _is_stage(module: str) -> bool:
    return room_of(module) == STAGES_ROOM and module.count(".") >= 1


def leaks(graph: dict[str, set[str]]) -> list[str]:
    """Every import in ``graph`` (module -> the modules it imports) that the map does not allow."""
    out = []
    for m in sorted(graph):
        fm, rm = floor_of(m), room_of(m)
        if fm is None:
            out.append(f"{m}: room {rm!r} is on no floor of compress/layers.py")
            continue
        for d in sorted(graph[m]):
            fd, rd = floor_of(d), room_of(d)
            if fd is None:
                out.append(f"{m} imports {d}: room {rd!r} is on no floor")
            elif fd > fm:
                out.append(f"{m} (floor {fm}) imports {d} (floor {fd}): upward")
            elif fd == fm and rd != rm and (rm, rd) not in SIDEWAYS:
                out.append(f"{m} imports {d}: sideways on floor {fm}, {rm} -> {rd} is not in SIDEWAYS")
            elif rm != STAGES_ROOM and _is_stage(d) and d not in REGISTRY:
                out.append(f"{m} imports the stage module {d}: outside stages/ only "
                           f"{', '.join(sorted(REGISTRY))}")
            elif rm == STAGES_ROOM and m not in REGISTRY and d != m and _is_stage(d) \
                    and d != "compress.stages.base":
                out.append(f"{m} imports {d}: stages never import each other (nor the registry)")
    return out


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    state: dict[str, int] = {}  # 1 on the stack, 2 done
    found: list[list[str]] = []

    def visit(m: str, stack: list[str]) -> None:
        state[m] = 1
        stack.append(m)
        for d in sorted(graph.get(m, ())):
            if d == m or d not in graph:
                continue
            if state.get(d) == 1:
                found.append(stack[stack.index(d):] + [d])
            elif d not in state:
                visit(d, stack)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [])
    return found


# -- the package ---------------------------------------------------------------------------------


def test_the_package_keeps_to_the_map():
    assert leaks(GRAPH) == []


def test_the_imports_form_no_cycle():
    assert cycles(GRAPH) == []


def test_every_room_on_the_map_is_in_the_package_and_every_room_is_on_it():
    rooms = {room_of(m) for m in MODULES} - {"__init__"}
    assert sorted(rooms - set(ROOMS)) == []
    assert sorted(set(ROOMS) - rooms) == []


def test_every_sideways_pair_the_map_allows_is_used():
    # the map is measured from the code: a pair nothing uses any more is taken off it
    used = {(room_of(m), room_of(d)) for m, deps in GRAPH.items() for d in deps
            if floor_of(m) == floor_of(d) and room_of(m) != room_of(d)}
    assert sorted(SIDEWAYS - used) == []


def test_the_sideways_pairs_form_no_cycle_and_stay_on_one_floor():
    assert [(a, b) for a, b in SIDEWAYS if ROOMS[a] != ROOMS[b]] == []
    rooms = {a: {b for x, b in SIDEWAYS if x == a} for a, _ in SIDEWAYS}
    assert cycles(rooms) == []


def test_the_map_has_the_seven_floors_of_the_design():
    assert sorted(FLOORS) == list(range(1, 8))
    assert [r for rooms in FLOORS.values() for r in rooms if list(ROOMS).count(r) != 1] == []


def test_the_readme_shows_the_map():
    readme = (ROOT / "README.md").read_text()
    block = "\n".join(f"    {line}" if line else "" for line in floor_map_text().splitlines())
    assert f"\n{block}\n" in readme


def test_the_bundle_runner_imports_nothing_from_the_package():
    # it is copied as one standalone file into every bundle
    assert GRAPH["compress.bundle.runner"] == set()


def test_the_config_accepts_exactly_the_registered_tasks():
    from compress.config.pipeline import TASK_NAMES
    from compress.tasks import TASKS

    assert tuple(TASKS) == TASK_NAMES


# -- the checker ---------------------------------------------------------------------------------


@pytest.mark.parametrize("module, imports, reported", [
    # the engine reaches into the teacher stage (engine/run.py did): floor 6 -> 5 is down, the
    # registry rule alone catches it
    ("compress.engine.run", {"compress.stages.teacher"},
     "compress.engine.run imports the stage module compress.stages.teacher: outside stages/ only "
     "compress.stages, compress.stages.base"),
    # the search reaches into the benchmark stage
    ("compress.search.study", {"compress.stages.benchmark"},
     "compress.search.study imports the stage module compress.stages.benchmark: outside stages/ "
     "only compress.stages, compress.stages.base"),
    # a stage imports another stage, or the registry
    ("compress.stages.prune", {"compress.stages.distill"},
     "compress.stages.prune imports compress.stages.distill: stages never import each other "
     "(nor the registry)"),
    ("compress.stages.prune", {"compress.stages"},
     "compress.stages.prune imports compress.stages: stages never import each other (nor the "
     "registry)"),
    # an upward import
    ("compress.config.rules", {"compress.quant.ptq"},
     "compress.config.rules (floor 2) imports compress.quant.ptq (floor 4): upward"),
    # sideways on one floor, against the direction the map allows (quant -> bench is allowed)
    ("compress.bench.latency", {"compress.quant.ptq"},
     "compress.bench.latency imports compress.quant.ptq: sideways on floor 4, bench -> quant is "
     "not in SIDEWAYS"),
    # the data-type module exports and measures (artifacts.count_macs did)
    ("compress.artifacts", {"compress.bench.macs"},
     "compress.artifacts imports compress.bench.macs: sideways on floor 4, artifacts -> bench is "
     "not in SIDEWAYS"),
    # a room the map does not name
    ("compress.util.misc", set(), "compress.util.misc: room 'util' is on no floor of compress/layers.py"),
])
def test_the_checker_reports_each_leak(module, imports, reported):
    assert leaks({module: imports}) == [reported]


def test_the_checker_allows_what_the_map_allows():
    graph = {"compress.search.loop": {"compress.engine.run", "compress.stages", "compress.stages.base",
                                      "compress.config.pipeline"},
             "compress.stages.prune": {"compress.stages.base", "compress.bench.macs"},
             "compress.stages": {"compress.stages.base"},
             "compress.quant.judge": {"compress.bench.latency"}}
    assert leaks(graph) == []


@pytest.mark.parametrize("module, is_package, source, expected", [
    ("compress.config.pipeline", False, "from ..engine import run\n", {"compress.engine.run"}),
    ("compress.config.pipeline", False, "from ..engine.run import Engine\n", {"compress.engine.run"}),
    ("compress.config.pipeline", False, "from . import rules\n", {"compress.config.rules"}),
    ("compress.stages", True, "from .teacher import TeacherStage\n", {"compress.stages.teacher"}),
    ("compress.stages.prune", False, "from .distill import x\nfrom .. import errors\n",
     {"compress.stages.distill", "compress.errors"}),
])
def test_the_walker_reads_relative_imports(module, is_package, source, expected):
    assert imports_of(source, module, is_package, set(MODULES)) == expected


def test_a_relative_import_that_runs_upward_is_a_leak():
    found = imports_of("def f():\n    from ..cli import cli\n", "compress.config.pipeline", False,
                       set(MODULES))
    assert leaks({"compress.config.pipeline": found}) == [
        "compress.config.pipeline (floor 2) imports compress.cli (floor 7): upward"]


def test_the_walker_sees_imports_inside_functions_and_type_checking():
    src = ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from compress.cli import x\n"
           "def f():\n    import compress.engine.run\n")
    assert imports_of(src, "compress.m", False, set(MODULES)) == {"compress.cli", "compress.engine.run"}


def test_the_checker_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"a"}}) == [["a", "b", "a"]]


@pytest.mark.parametrize("module, expected", [("compress.engine.run", 6), ("compress.errors", 1),
                                              ("compress", 1), ("compress.records.base", 2)])
def test_floor_of_a_module(module, expected):
    assert floor_of(module) == expected
