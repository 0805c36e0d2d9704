"""What goes into ``fit_`` (``compress.train.loop``) and what comes out: the data, the plan, the
teacher to distil from, the result."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from compress.config.train import SoftTargets, TrainConfig

if TYPE_CHECKING:
    import torch
    from torch import nn
    from torch.utils.data import Dataset

    from compress.data.sources import DataBundle


@dataclass
class FitData:
    """What ``fit_`` trains on, and the split that picks the best epoch."""

    train: Dataset
    val: Dataset
    batch_size: int  # the global batch (``TrainConfig.batch_size`` overrides it)
    augment_shift: int = 0  # random translation in pixels while training (image tasks)

    @classmethod
    def of(cls, data: DataBundle, train: Dataset | None = None) -> FitData:
        """A data bundle's splits and settings (``train``: another training set, e.g. with the
        transfer set added)."""
        return cls(data.train if train is None else train, data.val, data.batch_size,
                   data.augment_shift)


@dataclass
class FitPlan:
    """How ``fit_`` trains: the settings, the device, the seed and the loop's name (it names the
    progress bar, the log lines and the checkpoint file)."""

    cfg: TrainConfig
    device: torch.device
    seed: int = 0
    desc: str = "train"
    progress: bool = True


@dataclass
class KD:
    """Distillation from ``teacher``: the soft-target pair the task's loss reads, plus FitNets
    hint pairs (student module, teacher module)."""

    teacher: nn.Module
    soft: SoftTargets = field(default_factory=SoftTargets)
    hints: list[tuple[str, str]] = field(default_factory=list)
    hint_weight: float = 1.0

    def key(self) -> dict:
        return {**self.soft.model_dump(), "hints": [list(h) for h in self.hints],
                "hint_weight": self.hint_weight}


@dataclass
class FitResult:
    best_val: float  # the task's headline metric on the validation split, at the best epoch
    best_epoch: int
    history: list[dict]
    samples_per_s: float
