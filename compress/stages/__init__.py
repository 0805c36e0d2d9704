"""The closed registry of stage kinds. User code never adds to it."""

from __future__ import annotations

import importlib

from compress.stages.base import Stage

KINDS: dict[str, str] = {
    "distill": "compress.stages.distill",
    "export": "compress.stages.export",
    "benchmark": "compress.stages.benchmark",
}


def stage_class(kind: str) -> type[Stage]:
    return importlib.import_module(KINDS[kind]).STAGE
