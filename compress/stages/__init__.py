"""The closed registry of stage kinds. User code never adds to it."""

from __future__ import annotations

import importlib

from compress.stages.base import Stage

KINDS: dict[str, str] = {
    "distill": "compress.stages.distill",
    "prune": "compress.stages.prune",
    "export": "compress.stages.export",
    "benchmark": "compress.stages.benchmark",
    "quantize": "compress.stages.quantize",
}


def stage_class(kind: str) -> type[Stage]:
    return importlib.import_module(KINDS[kind]).STAGE
