"""The floor map of the package, kept as data in this one place: the README's Layout section shows
it (``floor_map_text``) and ``tests/test_layers.py`` walks every import against it.

A module imports from the floors below its own. On its own floor it imports from its own room,
and from another room only where ``SIDEWAYS`` names the pair. Outside ``compress/stages/``, the
only stage modules a module may import are ``REGISTRY``: the registry of kinds and the base that
every stage and the engine share; a single stage is reached through the registry, by kind.
Imports nothing.
"""

from __future__ import annotations

# floor -> the rooms on it (a room is the first name under compress: a folder or a module)
FLOORS: dict[int, tuple[str, ...]] = {
    1: ("errors", "common", "layers"),
    2: ("config", "records"),
    3: ("tasks", "models", "data"),
    4: ("train", "export", "quant", "bench", "artifacts", "stage_reports"),
    5: ("stages", "report", "bundle", "gates"),
    6: ("engine", "search"),
    7: ("cli",),
}

# (room, room it may import) on one floor, each measured from the code; the pairs form no cycle
SIDEWAYS: frozenset[tuple[str, str]] = frozenset({
    ("common", "errors"),        # helpers raise the project's errors
    ("data", "tasks"),           # a data source is shaped for its task
    ("data", "models"),          # text data uses the teacher's tokenizer
    ("quant", "bench"),          # a quantize candidate is judged by its measured latency
    ("quant", "export"),         # QAT exports its converted graph
    ("quant", "stage_reports"),  # the judge writes the quantize report's rows
    ("bench", "export"),         # count_macs exports a torch module to count its graph
    ("bench", "artifacts"),      # the benchmark measures model artifacts
    ("stages", "bundle"),        # the package stage writes a bundle
    ("search", "engine"),        # a search runs the engine once per trial
})

STAGES_ROOM = "stages"
REGISTRY: frozenset[str] = frozenset({"compress.stages", "compress.stages.base"})

ROOMS: dict[str, int] = {room: f for f, rooms in FLOORS.items() for room in rooms}


def room_of(module: str) -> str:
    """``compress.engine.run`` -> ``engine``; the package itself is the room ``__init__``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def floor_of(module: str) -> int | None:
    """The floor of a ``compress`` module (the package's ``__init__`` stands on floor 1), or None
    for a room the map does not name."""
    room = room_of(module)
    return 1 if room == "__init__" else ROOMS.get(room)


def floor_map_text() -> str:
    """The map as the README shows it, top floor first."""
    lines = [f"floor {f}  {', '.join(FLOORS[f])}" for f in sorted(FLOORS, reverse=True)]
    lines.append("")
    lines.append("sideways on one floor, and only these:")
    lines += [f"  {a} -> {b}" for a, b in sorted(SIDEWAYS)]
    lines.append("")
    lines.append(f"stage modules importable outside stages/: {', '.join(sorted(REGISTRY))}")
    return "\n".join(lines)
