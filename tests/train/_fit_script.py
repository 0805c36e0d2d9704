"""Runs one fit_ on digits in the training scope; writes the final weights' sha256 (used by the
kill-and-resume and the two-process tests)."""

from __future__ import annotations

import hashlib
import json
import sys
import time
from pathlib import Path

import torch
from torch import nn

from compress.config.data import DataConfig
from compress.data.sources import load_data
from compress.tasks.classification import ClassificationTask
from compress.train.checkpoint import TrainingScope
from compress.train.loop import FitData, FitPlan, TrainConfig, fit_


class SlowMLP(nn.Module):
    """No BatchNorm (per-rank batch statistics would differ from one process's); ``delay``
    seconds per forward so a test can kill the process mid-epoch."""

    def __init__(self, side: int, delay: float = 0.0):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(side * side, 32), nn.ReLU(), nn.Linear(32, 10))
        self.delay = delay

    def forward(self, x):
        if self.delay and self.training:
            time.sleep(self.delay)
        return self.net(x)


def run(work: Path | None, out: Path, epochs: int, shift: int, delay: float, every: int | None) -> None:
    from compress.train import distributed as dist

    torch.set_num_threads(1)
    dist.init_from_env(torch.device("cpu"))  # under torchrun: join the gloo group
    data = load_data(DataConfig(source="digits", image_size=8, batch_size=64), seed=0)
    torch.manual_seed(0)
    model = SlowMLP(8, delay)
    cfg = TrainConfig(epochs=epochs, lr=0.01, checkpoint_every_steps=every)
    fit_(model, ClassificationTask(), FitData(data.train, data.val, 64, shift),
         FitPlan(cfg, torch.device("cpu"), seed=3, progress=False),
         scope=TrainingScope(work_dir=work, key="test"))
    if not dist.world().main:
        return
    h = hashlib.sha256()
    for k, v in model.state_dict().items():
        h.update(k.encode() + v.numpy().tobytes())
    out.write_text(json.dumps({"sha256": h.hexdigest(),
                               "state": {k: v.flatten().tolist() for k, v in model.state_dict().items()}}))


if __name__ == "__main__":
    a = json.loads(sys.argv[1])
    run(Path(a["work"]) if a["work"] else None, Path(a["out"]), a["epochs"], a["shift"], a["delay"],
        a["every"])
