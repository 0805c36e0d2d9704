"""The closed registry of stage kinds: each maps to its torch-free config model and, lazily, to
its implementation. User code never adds to it."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from compress.stages import configs as c

if TYPE_CHECKING:
    from compress.stages.base import Stage

CONFIGS: dict[str, type[c.StageConfig]] = {
    "distill": c.DistillConfig,
    "prune": c.PruneConfig,
    "export": c.ExportConfig,
    "quantize": c.QuantizeConfig,
    "benchmark": c.BenchmarkConfig,
    "package": c.PackageConfig,
}
IMPLEMENTATIONS: dict[str, str] = {
    "teacher": "compress.stages.teacher:TeacherStage",
    "distill": "compress.stages.distill:DistillStage",
    "prune": "compress.stages.prune:PruneStage",
    "export": "compress.stages.export:ExportStage",
    "quantize": "compress.stages.quantize:QuantizeStage",
    "benchmark": "compress.stages.benchmark:BenchmarkStage",
    "package": "compress.stages.package:PackageStage",
}
KINDS: tuple[str, ...] = tuple(CONFIGS)


def stage_class(kind: str) -> type[Stage]:
    """The stage implementation of ``kind`` (imports it, and torch with it)."""
    module, _, name = IMPLEMENTATIONS[kind].partition(":")
    return getattr(importlib.import_module(module), name)
