#!/usr/bin/env bash
# GPU smoke check of the training loop: distill epochs on CUDA, AMP (bf16/fp16) vs fp32, on the
# demo's models (teacher ResNet width 32 depth 2-2-2, student width 8 depth 1-1-1), digits 32x32.
# Prints samples/s and peak GPU memory per precision as one table.
#
#   bash benchmarks/gpu_smoke.sh [--device cuda] [--epochs 3] [--batch 256]
#   bash benchmarks/gpu_smoke.sh --device cpu --epochs 1       # check it runs, no GPU needed
#
# No network and no install: it uses the python that is there (PYTHON=..., default python3) with the
# repo on PYTHONPATH. Needs torch, numpy and pydantic; scikit-learn is optional (without it the
# inputs are synthetic 32x32 images, and the script says so).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
if ! "$PY" -c 'import torch' 2>/dev/null; then
  echo "gpu_smoke: '$PY' cannot import torch; set PYTHON=/path/to/python with torch installed" >&2
  exit 1
fi
if ! "$PY" -c 'import pydantic' 2>/dev/null; then
  echo "gpu_smoke: '$PY' cannot import pydantic (compress.runtime.train_config needs it);" \
       "pip install pydantic, or set PYTHON=" >&2
  exit 1
fi
export PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}"
exec "$PY" - "$@" <<'PYEOF'
import argparse
import time

import torch

from compress.models.cnn import ResNet
from compress.runtime.train import TrainConfig, fit_
from compress.tasks.classification import ClassificationTask


class Rows(torch.utils.data.Dataset):
    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return {"input": self.x[i]}, self.y[i]


def digits(size):
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        print("note: scikit-learn is not installed: synthetic 32x32 inputs (speed only, accuracy is "
              "meaningless)")
        g = torch.Generator().manual_seed(0)
        return torch.randn(1797, 1, size, size, generator=g), torch.randint(0, 10, (1797,), generator=g)
    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32)[:, None] / 16.0
    x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    return (x - 0.5) / 0.5, torch.tensor(d.target)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--teacher-epochs", type=int, default=8)
    args = ap.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("gpu_smoke: torch.cuda.is_available() is False on this machine "
                         f"(torch {torch.__version__}); run with --device cpu to check the script")
    device = torch.device(args.device)
    x, y = digits(32)
    train, val = Rows(x[:1500], y[:1500]), Rows(x[1500:], y[1500:])
    task = ClassificationTask()
    torch.manual_seed(0)
    teacher = ResNet(1, 10, width=32, depth=(2, 2, 2))
    teacher_fit = fit_(teacher, task, train, val, TrainConfig(epochs=args.teacher_epochs, lr=1e-2),
                       64, device, progress=False)
    amp = "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "fp16"
    rows = []
    for precision in ["fp32", amp] if device.type == "cuda" else ["fp32", "bf16"]:
        for cache in ("off", "auto"):
            torch.manual_seed(0)
            student = ResNet(1, 10, width=8, depth=(1, 1, 1))
            cfg = TrainConfig(epochs=args.epochs, lr=1e-2, precision=precision, teacher_cache=cache)
            if device.type == "cuda":
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            t0 = time.perf_counter()
            fit = fit_(student, task, train, val, cfg, args.batch, device, teacher=teacher, progress=False)
            if device.type == "cuda":
                torch.cuda.synchronize()
            wall = time.perf_counter() - t0
            peak = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else float("nan")
            rows.append((precision, cache, fit.samples_per_s, len(train) * args.epochs / wall, peak,
                         fit.best_val))
    name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    print(f"device: {name}, torch {torch.__version__}, batch {args.batch}, {args.epochs} epochs, "
          f"{len(train)} training samples; teacher val accuracy {teacher_fit.best_val:.4f}")
    print("| precision | teacher cache | train samples/s | wall samples/s | peak GPU MiB | val accuracy |")
    print("|---|---|---|---|---|---|")
    for p, c, sps, wall, peak, acc in rows:
        print(f"| {p} | {c} | {sps:.0f} | {wall:.0f} | {peak:.0f} | {acc:.4f} |")


main()
PYEOF
