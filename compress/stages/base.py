"""The stage contract: a config model, a stage class, and the context the engine hands in."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from pydantic import BaseModel, ConfigDict

from compress.artifacts import ModelArtifact, StageResult
from compress.data.sources import DataBundle


class StageConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")


@dataclass
class BenchSettings:
    """How the pipeline's target measures latency (from its benchmark stage, else defaults)."""

    threads: int = 1
    opt_level: str = "all"
    runs: int = 200
    warmup: int = 20


@dataclass
class StageContext:
    run_dir: Path
    stage_dir: Path
    stage_name: str
    where: str  # YAML path of this stage, e.g. "stages[1].prune", for messages
    data: DataBundle
    teacher: ModelArtifact | None
    device: torch.device
    seed: int
    bench: BenchSettings
    published: dict[str, ModelArtifact] = field(default_factory=dict)
    progress: bool = True
    pipeline: Any = None  # the validated PipelineConfig, for stages that need global settings

    def example(self, batch: int = 1) -> torch.Tensor:
        return self.data.example(batch)


class Stage(ABC):
    kind: ClassVar[str]
    Config: ClassVar[type[StageConfig]]
    accepts: ClassVar[tuple[str, ...]] = ("torch",)  # input formats
    uses_bench: ClassVar[bool] = False  # its output depends on the pipeline's benchmark settings

    def __init__(self, cfg: StageConfig):
        self.cfg = cfg

    def key_extra(self) -> dict:
        """Facts beyond config and inputs that change this stage's output (part of its resume key)."""
        return {}

    @abstractmethod
    def run(self, model: ModelArtifact, ctx: StageContext) -> StageResult:
        """Do the stage's work and write its files under ``ctx.stage_dir``."""
