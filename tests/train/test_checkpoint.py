"""Mid-stage checkpoints: a run killed with SIGKILL mid-epoch resumes from its last checkpoint and
ends with the same weights, bit for bit, as a run never interrupted (CPU, fixed seed)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from compress.train.checkpoint import Checkpointer, rng_state, set_rng_state

SCRIPT = Path(__file__).with_name("_fit_script.py")
ROOT = Path(__file__).resolve().parents[2]


def _cmd(work, out, **kw) -> list[str]:
    args = {"work": str(work) if work else None, "out": str(out), "epochs": 3, "shift": 1,
            "delay": 0.01, "every": 4, **kw}
    return [sys.executable, str(SCRIPT), json.dumps(args)]


def _env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'tests'}"}


def test_killed_run_resumes_to_identical_weights(tmp_path):
    plain = tmp_path / "plain.json"
    subprocess.run(_cmd(tmp_path / "w0", plain), env=_env(), check=True, timeout=120)
    work, ckpt = tmp_path / "w1", tmp_path / "w1" / "ckpt-train.pt"
    proc = subprocess.Popen(_cmd(work, tmp_path / "killed.json"), env=_env())
    deadline = time.time() + 60
    while not ckpt.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    assert proc.poll() is None, "the run finished before it could be killed; make it slower"
    time.sleep(0.15)  # let it get past the first checkpoint, into the middle of some epoch
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    saved = torch.load(ckpt, weights_only=True)
    assert not (tmp_path / "killed.json").exists() and saved["epoch"] < 3
    res = subprocess.run(_cmd(work, tmp_path / "resumed.json"), env=_env(), check=True, timeout=120,
                         capture_output=True, text=True)
    assert f"resumed from checkpoint at epoch {saved['epoch']}" in res.stderr + res.stdout
    a, b = json.loads(plain.read_text()), json.loads((tmp_path / "resumed.json").read_text())
    assert a["sha256"] == b["sha256"]


def test_checkpoint_with_another_key_is_ignored(tmp_path):
    Checkpointer(tmp_path, "distill", "key-a").save({"epoch": 2})
    assert Checkpointer(tmp_path, "distill", "key-a").load()["epoch"] == 2
    assert Checkpointer(tmp_path, "distill", "key-b").load() is None
    (tmp_path / "ckpt-prune-step-1.pt").write_bytes(b"not a checkpoint")
    assert Checkpointer(tmp_path, "prune step 1", "key-a").load() is None
    Checkpointer(tmp_path, "distill", "key-a").remove()
    assert not (tmp_path / "ckpt-distill.pt").exists()


def test_rng_state_round_trips_through_a_weights_only_file(tmp_path):
    import random

    import numpy as np

    state = rng_state()
    first = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    torch.save(state, tmp_path / "rng.pt")
    set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True))
    assert (random.random(), float(np.random.rand()), float(torch.rand(1))) == first


@pytest.mark.parametrize("precision,expected", [("auto", None), ("fp32", None), ("bf16", torch.bfloat16)])
def test_precision_on_cpu(precision, expected):
    from compress.train.loop import amp_dtype

    assert amp_dtype(precision, torch.device("cpu")) == expected


def test_no_resume_ignores_a_checkpoint_left_in_the_work_folder(tmp_path):
    """A checkpoint from a killed run is picked up by a resumed run and not by --no-resume."""
    import io

    from torch import nn

    from compress.common.console import Console, use
    from compress.data.sources import NamedDataset
    from compress.tasks.classification import ClassificationTask
    from compress.train.checkpoint import TrainingScope
    from compress.train.loop import FitData, FitPlan, TrainConfig, fit_

    g = torch.Generator().manual_seed(0)
    data = NamedDataset({"input": torch.randn(64, 4, generator=g)}, torch.randint(0, 3, (64,), generator=g))

    def run(resume: bool) -> str:
        out = io.StringIO()
        use(Console(stream=out))
        torch.manual_seed(0)
        fit_(nn.Linear(4, 3), ClassificationTask(), FitData(data, data, 16),
             FitPlan(TrainConfig(epochs=2), torch.device("cpu"), seed=0, progress=False),
             scope=TrainingScope(work_dir=tmp_path, key="k", resume=resume))
        use(Console())
        return out.getvalue()

    assert "resumed from checkpoint" not in run(True)  # first run: nothing to resume
    assert list(tmp_path.glob("*"))  # it left its checkpoint
    assert "resumed from checkpoint at epoch 2" in run(True)
    assert "resumed from checkpoint" not in run(False)
