"""Shared test helpers: a tiny pipeline config that runs in seconds on digits."""

from __future__ import annotations

import copy
from pathlib import Path

import torch
import yaml

from compress.models.cnn import ResNet
from compress.runtime.train import TrainConfig, fit_

ROOT = Path(__file__).resolve().parents[1]

TINY = {
    "version": 1,
    "name": "tiny",
    "seed": 0,
    "device": "cpu",
    "data": {"source": "digits", "image_size": 16, "batch_size": 64},
    "teacher": {"arch": "resnet", "kwargs": {"width": 8, "depth": [1, 1]}, "train": {"epochs": 2, "lr": 0.01}},
    "student": {"arch": "resnet", "kwargs": {"width": 4, "depth": [1, 1]}},
    "stages": [
        {"distill": {"epochs": 1, "lr": 0.01}},
        {"export": {"opset": 18}},
        {"benchmark": {"runs": 20, "warmup": 2}},
    ],
}


def write_config(folder: Path, cfg: dict, name: str = "pipe.yaml") -> Path:
    path = folder / name
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


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
        fit_(model, data.train, data.val, TrainConfig(epochs=3, lr=0.01), 64, torch.device("cpu"),
             progress=False)
        torch.save(model.state_dict(), path)
    return model.eval()
