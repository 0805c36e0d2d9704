"""What counting MACs on the exported ONNX graph costs per prune step, against torch-pruning's
module-hook counter (which misses Conv2d subclasses and functional convs, compress/bench/macs.py).

Each model is counted both ways on the same example input; the ONNX way exports it first (the
prune stage's per-step exporter, torchscript) and counts with compress.bench.macs.onnx_macs.
Run: .venv/bin/python benchmarks/prune_mac_counter.py
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import torch

from compress.bench.macs import onnx_macs
from compress.export.torch_onnx import export_onnx
from compress.models.build import model_summary
from compress.models.cnn import ResNet


def _best_of(fn, repeats: int = 5) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000, out


def main() -> None:
    torch.manual_seed(0)
    nets = {"mobile student (width 8, 32x32)": (ResNet(1, 10, width=8, depth=(1, 1, 1)), 32),
            "mobile teacher (width 32, 32x32)": (ResNet(1, 10, width=32, depth=(2, 2, 2)), 32),
            "resnet width 64, 96x96": (ResNet(3, 10, width=64, depth=(2, 2, 2)), 96)}
    print("| model | torch-pruning ms | export + ONNX count ms | MACs torch-pruning | MACs ONNX |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for name, (net, size) in nets.items():
            net.eval()
            x = torch.randn(1, net.stem[0].in_channels, size, size)
            tp_ms, summary = _best_of(lambda net=net, x=x: model_summary(net, x))

            def onnx_way(net=net, x=x):
                path = export_onnx(net, {"input": x}, Path(tmp) / "step.onnx", exporter="torchscript")
                return onnx_macs(path).total

            onnx_ms, total = _best_of(onnx_way)
            print(f"| {name} | {tp_ms:.1f} | {onnx_ms:.1f} | {summary['macs']:,} | {total:,} |")


if __name__ == "__main__":
    main()
