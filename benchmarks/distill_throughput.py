"""Samples/s of the distill stage vs a minimal hand-written PyTorch KD loop, same model and data.

    .venv/bin/python benchmarks/distill_throughput.py [--epochs 3] [--repeats 3] [--augment-shift 0]

Both train the built-in student (ResNet width 8) against the built-in teacher (ResNet width 32,
depth 2-2-2) on digits, batch 64, Hinton KD at T=4, alpha=0.7. The runs alternate (stage, hand,
stage, hand, ...) so machine drift hits both; the median of the per-pair ratios is printed. The
stage's wall time includes everything it does per epoch (validation, best-checkpoint copy).
Without augmentation the stage caches the frozen teacher's logits after the first epoch; with
``--augment-shift N`` both loops apply the same random shift and nothing can be cached.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from compress.data.sources import DataConfig, load_data, make_loader
from compress.models.cnn import ResNet
from compress.runtime.train import random_shift
from compress.stages.distill import DistillConfig, distill


def hand_loop(student, teacher, train, epochs: int, batch: int, shift: int) -> None:
    opt = torch.optim.AdamW(student.parameters(), lr=1e-2, weight_decay=1e-4)
    teacher.eval()
    for _ in range(epochs):
        student.train()
        for x, y in make_loader(train, batch, shuffle=True):
            x = random_shift(x, shift)
            with torch.no_grad():
                t = teacher(x)
            s = student(x)
            soft = F.kl_div(F.log_softmax(s / 4, 1), F.softmax(t / 4, 1), reduction="batchmean") * 16
            loss = 0.7 * soft + 0.3 * F.cross_entropy(s, y)
            opt.zero_grad()
            loss.backward()
            opt.step()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--augment-shift", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    data = load_data(DataConfig(augment_shift=args.augment_shift), seed=0)
    teacher = ResNet(1, 10, width=32, depth=(2, 2, 2)).eval()
    cfg = DistillConfig(epochs=args.epochs, lr=1e-2, temperature=4.0, alpha=0.7, grad_clip=0.0)
    n = len(data.train) * args.epochs
    stage_rates, hand_rates = [], []
    for r in range(args.repeats):
        torch.manual_seed(r)
        s = ResNet(1, 10, width=8, depth=(1, 1, 1))
        t0 = time.perf_counter()
        distill(s, teacher, data, cfg, torch.device("cpu"), seed=r, progress=False)
        stage_rates.append(n / (time.perf_counter() - t0))
        torch.manual_seed(r)
        s = ResNet(1, 10, width=8, depth=(1, 1, 1))
        t0 = time.perf_counter()
        hand_loop(s, teacher, data.train, args.epochs, data.batch_size, args.augment_shift)
        hand_rates.append(n / (time.perf_counter() - t0))
        print(f"repeat {r}: stage {stage_rates[-1]:.1f} samples/s, hand loop {hand_rates[-1]:.1f} samples/s")
    ratio = statistics.median(a / b for a, b in zip(stage_rates, hand_rates, strict=False))
    print("| torch threads | augment shift | stage samples/s (median) | hand loop samples/s (median) "
          "| ratio (median of pairs) |")
    print("|---|---|---|---|---|")
    print(f"| {torch.get_num_threads()} | {args.augment_shift} | {statistics.median(stage_rates):.1f} | "
          f"{statistics.median(hand_rates):.1f} | {ratio:.3f}x |")


if __name__ == "__main__":
    main()
