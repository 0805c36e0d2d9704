"""Static QDQ vs dynamic int8 on the distilled MiniLM student of a minilm-edge run.

    python benchmarks/minilm_quant_modes.py [RUN_DIR]      # default runs/minilm-edge

Both use the quantize stage's x86-vnni preset and per-channel weights; static is calibrated on 128
training sentences padded to 128 tokens. Quality is the mean cosine to the fp32 student on the
validation sentences; p50 at 128 tokens, 1 thread, ORT level extended, interleaved.
"""
import sys
import tempfile
from pathlib import Path

from compress.bench.latency import measure_interleaved
from compress.common.ort import make_session, run_batched
from compress.config.pipeline import load_config
from compress.data.sources import load_data
from compress.quant.ptq import (
    INT8_PRESETS,
    mean_cosine,
    preprocess,
    quantize_dynamic_onnx,
    quantize_static_onnx,
)
from compress.tasks.embedding import EmbeddingTask

cfg, _ = load_config("pipelines/minilm-edge.yaml")
data = load_data(cfg.data, cfg.seed)
task = EmbeddingTask()
run = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/minilm-edge")
src = run / "02-export" / "model.onnx"
out = Path(tempfile.mkdtemp())
pre = preprocess(src, out / "pre.onnx")
calib = task.arrays(data.calibration(128, seed=0), seq_len=128)[0]
t = INT8_PRESETS["x86-vnni"]
st = quantize_static_onnx(pre, out / "static.onnx", calib, t, [])
dy = quantize_dynamic_onnx(pre, out / "dynamic.onnx", t, [])
feeds, _ = task.arrays(data.val)
ref = run_batched(make_session(src, 1, "extended"), feeds)[0]
one = {k: v[:1] for k, v in task.arrays(data.val, seq_len=128)[0].items()}
ms = measure_interleaved([src, st, dy], [one] * 3, 1, "extended", 60, 10)
print("| variant | size | cosine to fp32 (val) | p50 ms, 128 tokens |")
print("|---|---|---|---|")
for name, p, m in zip(("fp32", "static QDQ", "dynamic"), (src, st, dy), ms, strict=True):
    got = run_batched(make_session(p, 1, "extended"), feeds)[0]
    print(f"| {name} | {p.stat().st_size/1e6:.1f} MB | {mean_cosine(ref, got):.4f} | {m.stats.p50:.2f} |")
