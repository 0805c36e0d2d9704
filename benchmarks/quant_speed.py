"""fp32 vs static PTQ vs dynamic PTQ vs QAT on the built-in models: ORT latency and accuracy.

Takes the trained teacher (and the distilled student, when present) of a pipeline run, makes the
three int8 variants of each, and measures all of a model's variants interleaved in one session
set (ORT CPU, batch 1, 1 thread by default), with accuracy in ORT on the validation split.

    .venv/bin/compress pipeline pipelines/mobile.yaml --out runs/mobile
    .venv/bin/python benchmarks/quant_speed.py runs/mobile --json runs/quant_speed.json
"""

from __future__ import annotations

import argparse
import copy
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from compress.artifacts import load_torch
from compress.bench.latency import measure_interleaved, ort_accuracy
from compress.config.pipeline import PipelineConfig
from compress.data.sources import load_data
from compress.export.torch_onnx import export_onnx
from compress.quant import qat as qatq
from compress.quant.ptq import (
    class_feeds,
    detect_preset,
    fused_ops,
    preprocess,
    quantize_dynamic_onnx,
    quantize_static_onnx,
    run_outputs,
)
from compress.tasks.classification import ClassificationTask
from compress.train.loop import KD, FitData, FitPlan, TrainConfig, fit_

TASK = ClassificationTask()


def variants(name: str, model: torch.nn.Module, teacher: torch.nn.Module, data, folder: Path,
             qat_epochs: int, seed: int) -> dict[str, Path]:
    """fp32, static, dynamic and QAT ONNX files of one model."""
    target = detect_preset().preset
    example = data.example(1)
    paths = {"fp32": export_onnx(model, example, folder / f"{name}-fp32.onnx")}
    pre = preprocess(paths["fp32"], folder / f"{name}-pre.onnx")
    calib = TASK.arrays(data.calibration(256, seed=seed))[0]  # training images only
    # the quantize stage's defaults: per-channel weights, minmax calibration, every op type
    paths["static"] = quantize_static_onnx(pre, folder / f"{name}-static.onnx", calib, target, [])
    paths["dynamic"] = quantize_dynamic_onnx(pre, folder / f"{name}-dynamic.onnx", target, [])
    t0 = time.perf_counter()
    trace = TASK.example(data.calibration(4, seed=seed), 4)["input"]
    prepared = qatq.prepare_qat(copy.deepcopy(model), trace)
    cfg = TrainConfig(epochs=qat_epochs, lr=5e-4, schedule="cosine")
    fit = fit_(prepared, TASK, FitData.of(data), FitPlan(cfg, torch.device("cpu"), seed, "qat", False),
               KD(teacher))
    print(f"{name}: QAT {qat_epochs} epoch(s) in {time.perf_counter() - t0:.0f}s, "
          f"fake-quant val accuracy {fit.best_val:.4f}")
    paths["qat"] = qatq.export_qdq_onnx(qatq.convert_qat(prepared), example,
                                        folder / f"{name}-qat.onnx", 18)
    return paths


def measure(paths: dict[str, Path], data, threads: int, runs: int) -> list[dict]:
    x, y = data.arrays("test")  # held out: chose nothing
    feed = class_feeds(paths["fp32"], x[:1])[0]
    ref = run_outputs(paths["fp32"], class_feeds(paths["fp32"], x)).argmax(1)
    ms = measure_interleaved(list(paths.values()), [feed] * len(paths), threads, "all", runs, 30)
    base = ms[0].stats.p50
    rows = []
    for (kind, path), m in zip(paths.items(), ms, strict=True):
        pred = run_outputs(path, class_feeds(path, x)).argmax(1)
        ops = fused_ops(path)
        rows.append({
            "variant": kind, "bytes": path.stat().st_size, "accuracy": ort_accuracy(path, x, y),
            "top1_agreement": float((pred == ref).mean()), "p50_ms": round(m.stats.p50, 4),
            "p90_ms": round(m.stats.p90, 4), "speedup": round(base / m.stats.p50, 2),
            "fused": {k: ops[k] for k in ("QLinearConv", "QLinearAdd", "QGemm", "ConvInteger",
                                          "MatMulInteger", "DynamicQuantizeMatMul") if k in ops},
            "float_conv": ops.get("Conv", 0) + ops.get("FusedConv", 0),
        })
    return rows


def table(results: dict[str, list[dict]]) -> str:
    lines = ["| model | variant | size | ORT accuracy | agreement | p50 ms | p90 ms | speedup | ORT fused ops |",
             "|---|---|---|---|---|---|---|---|---|"]
    for model, rows in results.items():
        for r in rows:
            fused = ", ".join(f"{k} {v}" for k, v in r["fused"].items()) or "-"
            lines.append(f"| {model} | {r['variant']} | {r['bytes'] / 1e3:.0f} kB | {r['accuracy'] * 100:.2f}% "
                         f"| {r['top1_agreement'] * 100:.1f}% | {r['p50_ms']:.4f} | {r['p90_ms']:.4f} "
                         f"| {r['speedup']:.2f}x | {fused} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", type=Path, help="a finished pipeline run (00-teacher, 01-distill)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--runs", type=int, default=300)
    ap.add_argument("--qat-epochs", type=int, default=2)
    ap.add_argument("--models", default="teacher,student")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    cfg = PipelineConfig.model_validate(yaml.safe_load((args.run_dir / "config.resolved.yaml").read_text()))
    torch.manual_seed(cfg.seed)
    data = load_data(cfg.data, cfg.seed)
    folders = {"teacher": args.run_dir / "00-teacher", "student": args.run_dir / "01-distill"}
    nets = {k: load_torch(f, data.input_shape[0], data.num_classes).module
            for k, f in folders.items() if k in args.models.split(",") and (f / "model.json").exists()}
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, net in nets.items():
            paths = variants(name, net, nets.get("teacher", net), data, Path(tmp), args.qat_epochs, cfg.seed)
            results[name] = measure(paths, data, args.threads, args.runs)
    print(f"\nORT {__import__('onnxruntime').__version__}, int8 preset {detect_preset().name} ({detect_preset().reason}), "
          f"{args.threads} thread(s), batch 1, {args.runs} interleaved runs\n")
    print(table(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=lambda o: np.asarray(o).tolist()))


if __name__ == "__main__":
    main()
