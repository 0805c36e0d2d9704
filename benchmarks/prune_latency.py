"""The ratio-to-latency curve of channel pruning on ONNX Runtime, for the built-in CNN families.

For each channel ratio the model is pruned (torch-pruning DepGraph, the prune stage's code),
exported to ONNX, and all ratios of one family are timed interleaved (A B C ... A B C) on one
thread, so drift hits them alike. Prints MACs ratio against measured latency ratio: fewer MACs
are not the same as less time, and this shows by how much.

    .venv/bin/python benchmarks/prune_latency.py [--runs 300] [--threads 1] [--exporter dynamo]
"""

from __future__ import annotations

import argparse
import copy
import tempfile
from pathlib import Path

import torch

from compress.bench.latency import measure_interleaved
from compress.config.stages import PruneConfig
from compress.export.torch_onnx import INPUT_NAME, export_onnx
from compress.models.cnn import MobileNetV2, ResNet
from compress.stages.prune import count, prune_channels

FAMILIES = {
    "resnet (width 32, depth 2-2-2)": lambda: ResNet(1, 10, width=32, depth=(2, 2, 2)),
    "mobilenetv2 (width_mult 1.0)": lambda: MobileNetV2(1, 10, width_mult=1.0),
}
RATIOS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)


def curve(build, ratios, example, folder: Path, args) -> list[dict]:
    """Prune one copy per ratio, export each, time them all interleaved."""
    torch.manual_seed(0)
    base = build().eval()
    rows, paths = [], []
    for r in ratios:
        model = copy.deepcopy(base)
        if r > 0:
            prune_channels(model, example, PruneConfig(ratio=r, round_to=args.round_to, measure_latency=False))
        macs, params = count(model, example)
        paths.append(export_onnx(model, example, folder / f"r{r:.2f}.onnx", exporter=args.exporter))
        rows.append({"ratio": r, "params": params, "macs": macs})
    feeds = [{INPUT_NAME: example.numpy()}] * len(paths)
    results = measure_interleaved(paths, feeds, args.threads, args.opt_level, args.runs, args.warmup)
    for row, res in zip(rows, results, strict=True):
        row["p50"], row["p90"] = res.stats.p50, res.stats.p90
    return rows


def table(name: str, rows: list[dict]) -> str:
    m0, t0 = rows[0]["macs"], rows[0]["p50"]
    lines = [
        f"### {name}",
        "",
        "| channel ratio | params | MACs | MACs ratio | p50 ms | p90 ms | latency ratio | speedup |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['ratio']:.1f} | {r['params']:,} | {r['macs'] / 1e6:.2f}M | {r['macs'] / m0:.3f} "
            f"| {r['p50']:.4f} | {r['p90']:.4f} | {r['p50'] / t0:.3f} | {t0 / r['p50']:.2f}x |"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=300)
    ap.add_argument("--warmup", type=int, default=30)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--opt-level", dest="opt_level", default="all")
    ap.add_argument("--round-to", dest="round_to", type=int, default=8)
    ap.add_argument("--exporter", choices=("dynamo", "torchscript"), default="dynamo")
    args = ap.parse_args()
    example = torch.randn(1, 1, 32, 32)
    print(f"ONNX Runtime CPU, {args.threads} thread(s), opt_level {args.opt_level}, batch 1, "
          f"{args.runs} interleaved runs per model, round_to {args.round_to}, exporter {args.exporter}\n")
    with tempfile.TemporaryDirectory() as tmp:
        for name, build in FAMILIES.items():
            print(table(name, curve(build, RATIOS, example, Path(tmp), args)), end="\n\n", flush=True)


if __name__ == "__main__":
    main()
