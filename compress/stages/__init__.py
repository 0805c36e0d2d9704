"""The closed registry of stage implementations: each kind maps, lazily, to its stage class.
The kinds and their torch-free config models are in ``compress.config.stages``. User code never
adds to either."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from compress.stages.base import Stage

IMPLEMENTATIONS: dict[str, str] = {
    "teacher": "compress.stages.teacher:TeacherStage",
    "distill": "compress.stages.distill:DistillStage",
    "prune": "compress.stages.prune:PruneStage",
    "export": "compress.stages.export:ExportStage",
    "quantize": "compress.stages.quantize:QuantizeStage",
    "benchmark": "compress.stages.benchmark:BenchmarkStage",
    "package": "compress.stages.package:PackageStage",
}


def stage_class(kind: str) -> type[Stage]:
    """The stage implementation of ``kind`` (imports it, and torch with it)."""
    module, _, name = IMPLEMENTATIONS[kind].partition(":")
    return getattr(importlib.import_module(module), name)
