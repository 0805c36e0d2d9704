"""Shared test helpers: a tiny pipeline config that runs in seconds on digits."""

from __future__ import annotations

import copy
from pathlib import Path

import yaml

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
