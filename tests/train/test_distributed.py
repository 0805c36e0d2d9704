"""Two processes (torchrun's launcher, gloo on CPU) train the same student as one process with the
same global batch: each rank takes its half of every global batch and DDP averages the gradients."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).with_name("_fit_script.py")
ROOT = Path(__file__).resolve().parents[2]


def _env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'tests'}"}


def _args(out: Path) -> str:
    return json.dumps({"work": None, "out": str(out), "epochs": 2, "shift": 0, "delay": 0.0, "every": None})


def test_two_gloo_processes_match_one_process(tmp_path):
    one, two = tmp_path / "one.json", tmp_path / "two.json"
    subprocess.run([sys.executable, str(SCRIPT), _args(one)], env=_env(), check=True, timeout=120)
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                    str(SCRIPT), _args(two)], env=_env(), check=True, timeout=180,
                   capture_output=True)
    a, b = json.loads(one.read_text())["state"], json.loads(two.read_text())["state"]
    diff = max(float((torch.tensor(a[k]) - torch.tensor(b[k])).abs().max()) for k in a)
    # Same samples in every global step, same init, the loss of each rank weighted by its share:
    # the only difference is float32 summation order (gradients summed per rank, then all-reduced),
    # about 1e-7 relative per step; AdamW over 40 steps keeps it far below 1e-4.
    assert diff < 1e-4, diff


def test_sampler_splits_each_global_batch_between_ranks():
    from compress.train.distributed import _sampler_class

    cls = _sampler_class()
    one = list(cls(10, 4, 1, 0, True, 7))
    r0, r1 = list(cls(10, 4, 2, 0, True, 7)), list(cls(10, 4, 2, 1, True, 7))
    assert [sorted(a + b) for a, b in zip(r0, r1, strict=True)] == [sorted(x) for x in one]
    assert [len(x) for x in r0] == [2, 2, 1] and [len(x) for x in r1] == [2, 2, 1]
    s = cls(10, 4, 2, 1, True, 7)
    s.set_epoch(1)
    assert list(s) != r1  # reshuffled per epoch
    s.start_step = 2
    assert len(list(s)) == 1


def test_group_by_length_batches_similar_lengths_and_keeps_every_sample():
    from compress.train.distributed import LENGTH_GROUP_BATCHES, _sampler_class

    g = torch.Generator().manual_seed(3)
    n, batch = 8 * LENGTH_GROUP_BATCHES * 2 + 5, 8  # two full runs of batches, then 5 left over
    lengths = torch.randint(2, 65, (n,), generator=g).tolist()
    cls = _sampler_class()
    plain, grouped = list(cls(n, batch, 1, 0, True, 0)), list(cls(n, batch, 1, 0, True, 0, lengths))
    assert sorted(i for b in grouped for i in b) == list(range(n))
    assert [len(b) for b in grouped] == [len(b) for b in plain]  # the short batch is still last

    def padded(batches):  # tokens after padding each batch to its longest
        return sum(len(b) * max(lengths[i] for i in b) for b in batches)

    # uniform lengths 2..64: a random batch of 8 pads to ~57 on average, a sorted one to ~its mean
    assert padded(grouped) < 0.65 * padded(plain), (padded(grouped), padded(plain))
    two = [list(cls(n, batch, 2, r, True, 0, lengths)) for r in (0, 1)]
    assert [sorted(a + b) for a, b in zip(*two, strict=True)] == [sorted(b) for b in grouped]
    s = cls(n, batch, 1, 0, True, 0, lengths)
    s.set_epoch(1)
    assert list(s) != grouped  # the runs and the batch order change per epoch
    assert list(cls(n, batch, 1, 0, True, 0, lengths)) == grouped  # and are the seed's


@pytest.mark.slow
def test_pipeline_with_two_processes(tmp_path):
    from _util import tiny_config, write_config

    cfg = write_config(tmp_path, tiny_config())
    res = subprocess.run([sys.executable, "-m", "compress.cli", "pipeline", str(cfg), "--out",
                          str(tmp_path / "run"), "--no-progress", "--nproc", "2"], env=_env(),
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert [s["status"] for s in report["stages"]] == ["done"] * 4
    assert not list((tmp_path / "run" / ".work").glob("*/ckpt-*.pt"))
