"""The stage contract: a stage class, and the context the engine hands in.

Config models live in ``compress.config.stages`` (torch-free); the registry in
``compress.stages`` maps a kind to both.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from compress.artifacts import ModelArtifact, ModelMeasurement, StageResult
from compress.config.stages import StageConfig

if TYPE_CHECKING:
    import torch

    from compress.config.pipeline import StudentConfig
    from compress.config.stages import ExportConfig, TargetConfig
    from compress.data.sources import DataBundle
    from compress.tasks.base import Task
    from compress.train.checkpoint import TrainingScope


@dataclass(kw_only=True)
class StageContext:
    """Everything a stage may read, as explicit fields (no whole-pipeline config), by name."""

    run_dir: Path
    stage_dir: Path  # temp folder, swapped into RUN_DIR/NN-kind/ when the stage succeeds
    work_dir: Path  # persistent, named by the resume key: mid-stage checkpoints survive a crash
    stage_name: str
    where: str  # YAML path of this stage, e.g. "stages[1].prune", for messages
    task: Task
    data: DataBundle
    teacher: ModelArtifact | None
    student: StudentConfig | None
    device: torch.device
    seed: int  # this stage's own seed, derived from the run's seed and the stage's name
    target: TargetConfig
    export: ExportConfig | None = None  # the run's export stage settings (None: it has none)
    published: dict[str, ModelArtifact] = field(default_factory=dict)
    measurements: list[ModelMeasurement] = field(default_factory=list)
    config_sha256: str = ""
    progress: bool = True
    scope: TrainingScope | None = None  # what fit_ calls in this stage checkpoint into and key by

    def example(self, batch: int = 1) -> dict[str, torch.Tensor]:
        """Named example inputs from the test split (export, tracing, op counting)."""
        return self.task.example(self.data.test, batch)


class Stage(ABC):
    kind: ClassVar[str]
    uses_target: ClassVar[bool] = False  # its output depends on how the target measures latency

    def __init__(self, cfg: StageConfig):
        self.cfg = cfg

    def trains(self) -> bool:
        """Whether this stage runs a training loop with its config (DDP peers run it too)."""
        return False

    def key_extra(self, ctx_target: TargetConfig) -> dict:
        """Facts beyond config and inputs that change this stage's output (part of its resume key)."""
        return {}

    @abstractmethod
    def run(self, model: ModelArtifact | None, ctx: StageContext) -> StageResult:
        """Do the stage's work and write its files under ``ctx.stage_dir``."""
