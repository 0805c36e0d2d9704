"""Shared test helpers: a tiny pipeline config that runs in seconds on digits."""

from __future__ import annotations

import copy
from pathlib import Path

import torch
import yaml

from compress.models.cnn import ResNet
from compress.tasks.classification import ClassificationTask
from compress.train.loop import FitData, FitPlan, TrainConfig, fit_

TASK = ClassificationTask()

ROOT = Path(__file__).resolve().parents[1]

TINY = {
    "version": 1,
    "name": "tiny",
    "seed": 0,
    "device": "cpu",
    "data": {"source": "digits", "image_size": 16, "batch_size": 64},
    "teacher": {"arch": "resnet", "kwargs": {"width": 8, "depth": [1, 1]}, "train": {"epochs": 3, "lr": 0.01}},
    "student": {"arch": "resnet", "kwargs": {"width": 4, "depth": [1, 1]}},
    "stages": [
        {"distill": {"epochs": 1, "lr": 0.01}},
        {"export": {"opset": 18}},
        {"benchmark": {}},
    ],
    "target": {"runs": 20, "warmup": 2},
}


def write_config(folder: Path, cfg: dict, name: str = "pipe.yaml") -> Path:
    path = folder / name
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def config_error(folder: Path, cfg: dict) -> str:
    """The ConfigError ``load_config`` raises for ``cfg`` written as a YAML, without the file's
    name and line (the first word of the message)."""
    import pytest

    from compress.config.pipeline import load_config
    from compress.errors import ConfigError

    with pytest.raises(ConfigError) as e:
        load_config(write_config(folder, cfg, "p.yaml"))
    return str(e.value).split(" ", 1)[1]


def tiny_config() -> dict:
    return copy.deepcopy(TINY)


def trained_resnet(data, cache) -> ResNet:
    """ResNet width 8, depth [1, 1, 1] trained briefly on digits; cached under ``cache``
    (tests pass the session's base temp dir, so quantize and QAT tests train it once)."""
    torch.manual_seed(0)
    model = ResNet(1, 10, width=8, depth=(1, 1, 1))
    path = cache / "tiny-resnet.pt"
    if path.exists():
        model.load_state_dict(torch.load(path, weights_only=True))
    else:
        fit_(model, TASK, FitData(data.train, data.val, 64),
             FitPlan(TrainConfig(epochs=6, lr=0.01), torch.device("cpu"), progress=False))
        torch.save(model.state_dict(), path)
    return model.eval()


def stage_context(tmp_path: Path, data, name: str, where: str, teacher=None, runs: int = 30,
                  opt_level: str = "all", task=TASK):
    """A StageContext for calling a stage directly (no engine), CPU, 1 thread."""
    from compress.config.stages import TargetConfig
    from compress.stages.base import StageContext

    stage_dir = tmp_path / name
    stage_dir.mkdir(exist_ok=True)
    work = tmp_path / ".work" / name
    work.mkdir(parents=True, exist_ok=True)
    target = TargetConfig(threads=1, opt_level=opt_level, runs=runs, warmup=5)
    return StageContext(run_dir=tmp_path, stage_dir=stage_dir, work_dir=work, stage_name=name,
                        where=where, task=task, data=data, teacher=teacher, student=None,
                        device=torch.device("cpu"), seed=0, target=target, progress=False)
