"""Samples/s of the distill stage vs a minimal hand-written PyTorch KD loop, same model and data;
plus the stage with the teacher live, with the on-disk teacher cache (warm), and in 2 processes.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/distill_throughput.py [--epochs 3] [--repeats 3]
        [--augment-shift 0] [--nproc 2]

Both train the built-in student (ResNet width 8) against the built-in teacher (ResNet width 32,
depth 2-2-2) on digits, batch 64, Hinton KD at T=4, alpha=0.7. The runs alternate (stage, hand,
stage, hand, ...) so machine drift hits both; the median of the per-pair ratios is printed. The
stage's wall time includes everything it does per epoch (validation, best-checkpoint copy).
Without augmentation the stage caches the frozen teacher's logits after the first epoch; with
``--augment-shift N`` both loops apply the same random shift and nothing can be cached.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from compress.data.sources import DataConfig, load_data, make_loader
from compress.models.cnn import ResNet
from compress.stages.distill import DistillConfig, distill
from compress.tasks.classification import ClassificationTask, random_shift
from compress.train.checkpoint import TrainingScope

TASK = ClassificationTask()


def hand_loop(student, teacher, train, epochs: int, batch: int, shift: int) -> None:
    opt = torch.optim.AdamW(student.parameters(), lr=1e-2, weight_decay=1e-4)
    teacher.eval()
    for _ in range(epochs):
        student.train()
        for inputs, y in make_loader(train, batch, shuffle=True):
            x = random_shift(inputs["input"], shift)
            with torch.no_grad():
                t = teacher(x)
            s = student(x)
            soft = F.kl_div(F.log_softmax(s / 4, 1), F.softmax(t / 4, 1), reduction="batchmean") * 16
            loss = 0.7 * soft + 0.3 * F.cross_entropy(s, y)
            opt.zero_grad()
            loss.backward()
            opt.step()


def stage_rate(data, teacher, cfg, r: int, scope: dict | None = None) -> float:
    torch.manual_seed(r)
    s = ResNet(1, 10, width=8, depth=(1, 1, 1))
    t0 = time.perf_counter()
    distill(s, teacher, TASK, data, cfg, torch.device("cpu"), seed=r, progress=False,
            scope=TrainingScope(**(scope or {})))
    return len(data.train) * cfg.epochs / (time.perf_counter() - t0)


def worker(args) -> None:
    """One rank of the 2-process row (started by torchrun)."""
    from compress.train import distributed as dist

    dist.init_from_env(torch.device("cpu"))
    data = load_data(DataConfig(augment_shift=args.augment_shift), seed=0)
    torch.manual_seed(0)
    teacher = ResNet(1, 10, width=32, depth=(2, 2, 2)).eval()
    cfg = DistillConfig(epochs=args.epochs, lr=1e-2, temperature=4.0, alpha=0.7, grad_clip=0.0,
                        teacher_cache="off")
    rate = stage_rate(data, teacher, cfg, 0)
    if dist.world().main:
        Path(args.out).write_text(json.dumps(rate))


def ddp_rate(args, nproc: int) -> float:
    out = Path(tempfile.mkdtemp()) / "rate.json"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
           __file__, "--worker", "--out", str(out), "--epochs", str(args.epochs),
           "--augment-shift", str(args.augment_shift)]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    subprocess.run(cmd, check=True, env=env, capture_output=True)
    return json.loads(out.read_text())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--augment-shift", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--nproc", type=int, default=2)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(args)
    data = load_data(DataConfig(augment_shift=args.augment_shift), seed=0)
    torch.manual_seed(0)
    teacher = ResNet(1, 10, width=32, depth=(2, 2, 2)).eval()
    kw = dict(epochs=args.epochs, lr=1e-2, temperature=4.0, alpha=0.7, grad_clip=0.0)
    live, cached = DistillConfig(**kw, teacher_cache="off"), DistillConfig(**kw, teacher_cache="force")
    scope = {"cache_dir": Path(tempfile.mkdtemp()), "teacher": teacher, "teacher_sha256": "bench",
             "data_key": "digits"}
    stage_rate(data, teacher, cached, 0, scope)  # fills the disk cache once (not timed)
    n = len(data.train) * args.epochs
    rates: dict[str, list[float]] = {"live": [], "disk": [], "hand": []}
    for r in range(args.repeats):
        rates["live"].append(stage_rate(data, teacher, live, r))
        rates["disk"].append(stage_rate(data, teacher, cached, r, scope))
        torch.manual_seed(r)
        s = ResNet(1, 10, width=8, depth=(1, 1, 1))
        t0 = time.perf_counter()
        hand_loop(s, teacher, data.train, args.epochs, data.batch_size, args.augment_shift)
        rates["hand"].append(n / (time.perf_counter() - t0))
        print(f"repeat {r}: " + ", ".join(f"{k} {v[-1]:.1f}" for k, v in rates.items()) + " samples/s")
    med = {k: statistics.median(v) for k, v in rates.items()}
    ratio = statistics.median(a / b for a, b in zip(rates["live"], rates["hand"], strict=True))
    ddp = ddp_rate(args, args.nproc) if args.nproc > 1 else None
    print(f"torch threads {torch.get_num_threads()}, augment shift {args.augment_shift}, "
          f"{args.epochs} epochs, medians of {args.repeats}")
    print("| loop | samples/s | vs hand loop | vs stage, teacher live |")
    print("|---|---|---|---|")
    print(f"| hand-written KD loop | {med['hand']:.1f} | 1.00x | |")
    print(f"| stage, teacher live | {med['live']:.1f} | {ratio:.3f}x (median of pairs) | 1.00x |")
    print(f"| stage, teacher cache on disk (warm) | {med['disk']:.1f} | {med['disk'] / med['hand']:.2f}x "
          f"| {med['disk'] / med['live']:.2f}x |")
    if ddp is not None:
        print(f"| stage, teacher live, {args.nproc} processes (gloo) | {ddp:.1f} | "
              f"{ddp / med['hand']:.2f}x | {ddp / med['live']:.2f}x |")


if __name__ == "__main__":
    main()
