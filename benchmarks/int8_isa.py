"""Which static int8 scheme keeps accuracy on which x86 ISA: each scheme of the mobile.yaml
teacher, run on this CPU's kernels and on AVX2-only kernels (``qemu-x86_64 -cpu Haswell``).

    .venv/bin/python benchmarks/int8_isa.py [--run-dir RUN] [--runs 200] [--no-qemu]

The teacher is ``RUN/00-teacher/model.onnx`` of a ``compress pipeline pipelines/mobile.yaml`` run,
or (without ``--run-dir``) trained here from that YAML's teacher section and cached under
``.cache/int8_isa/``. Every scheme is quantized here, as the quantize stage does it (QDQ, MinMax,
256 training images), so both runs score the same files:
- accuracy and top-1 agreement with fp32 on the test split (and agreement on all 1,797 digits
  natively); under qemu the fp32 reference is qemu's too;
- speed only natively: 1 thread, batch 1, the calling thread's CPU clock, interleaved. qemu's
  timing is emulation, not AVX2 hardware: not reported. (An AVX2-only EPYC measured int8 at
  0.86-0.95x of fp32 for this teacher: ../shared/FACTS.md.)
qemu comes from ``bash benchmarks/qemu/fetch_qemu.sh``.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from compress.common.ort import cpu_info  # noqa: E402
from compress.quant.ptq import FUSED_OPS, INT8_PRESETS, detect_preset, fused_ops  # noqa: E402
from tests.quant import haswell  # noqa: E402  (the qemu runner the tests use)

CACHE = ROOT / ".cache" / "int8_isa"


@dataclass(frozen=True)
class Scheme:
    name: str
    activation: str  # ORT QuantType names
    weight: str
    per_channel: bool = True
    reduce_range: bool = False
    extra: dict = field(default_factory=dict)  # quantize_static extra_options
    float_first_conv: bool = False

    def types(self) -> str:
        short = {"QUInt8": "U8", "QInt8": "S8"}
        return short[self.activation] + short[self.weight]


SCHEMES = [
    Scheme("U8S8 (x86-vnni)", "QUInt8", "QInt8"),
    Scheme("U8S8 reduce_range (old x86-avx2)", "QUInt8", "QInt8", reduce_range=True),
    Scheme("U8U8 (x86-avx2, optimum avx2)", "QUInt8", "QUInt8"),
    Scheme("U8U8 per-tensor", "QUInt8", "QUInt8", per_channel=False),
    Scheme("U8S8 per-tensor", "QUInt8", "QInt8", per_channel=False),
    Scheme("U8S8, first conv float", "QUInt8", "QInt8", float_first_conv=True),
    Scheme("U8S8, symmetric activations", "QUInt8", "QInt8", extra={"ActivationSymmetric": True}),
    Scheme("S8S8 (arm64)", "QInt8", "QInt8"),
    Scheme("S8S8, symmetric activations", "QInt8", "QInt8", extra={"ActivationSymmetric": True}),
]


def teacher_and_data(run_dir: Path | None) -> tuple[Path, dict[str, np.ndarray]]:
    """The teacher's fp32 ONNX and the digits splits of mobile.yaml (seed 0) as arrays."""
    import torch

    from compress.config.pipeline import load_config
    from compress.data.sources import load_data
    from compress.export.torch_onnx import export_onnx
    from compress.models.build import build_model
    from compress.tasks.classification import ClassificationTask
    from compress.train.loop import FitData, FitPlan, fit_

    cfg, _ = load_config(ROOT / "pipelines" / "mobile.yaml")
    data = load_data(cfg.data, seed=cfg.seed)
    arrays = {}
    for split in ("train", "val", "test"):
        arrays[f"x_{split}"], arrays[f"y_{split}"] = data.arrays(split)
    if run_dir is not None:
        return run_dir / "00-teacher" / "model.onnx", arrays
    CACHE.mkdir(parents=True, exist_ok=True)
    onnx_path, ck = CACHE / "teacher.onnx", CACHE / "teacher.pt"
    if not onnx_path.exists():
        net = build_model(cfg.teacher.spec(), 1, data.num_classes, "teacher")
        if ck.exists():
            net.load_state_dict(torch.load(ck, weights_only=True))
        else:
            fit_(net, ClassificationTask(), FitData.of(data),
                 FitPlan(cfg.teacher.train, torch.device("cpu"), seed=cfg.seed, desc="teacher",
                         progress=False))
            torch.save(net.state_dict(), ck)
        # a dynamic batch: qemu scores the test split in batches of 64 (kernels work per sample)
        export_onnx(net.eval(), data.example(1), onnx_path, 18, dynamic_batch=True)
    return onnx_path, arrays


def quantize_all(fp32: Path, calib: np.ndarray, out: Path, schemes: list[Scheme]) -> dict[str, Path]:
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    from compress.quant.ptq import preprocess, reader_for

    pre = preprocess(fp32, out / "pre.onnx")
    first_conv = next(n.name for n in onnx.load(str(pre)).graph.node if n.op_type == "Conv")
    paths = {}
    for i, s in enumerate(schemes):
        paths[s.name] = out / f"scheme{i}.onnx"
        quantize_static(str(pre), str(paths[s.name]), reader_for(pre, calib), quant_format=QuantFormat.QDQ,
                        per_channel=s.per_channel, reduce_range=s.reduce_range,
                        activation_type=getattr(QuantType, s.activation),
                        weight_type=getattr(QuantType, s.weight),
                        nodes_to_exclude=[first_conv] if s.float_first_conv else [],
                        extra_options=dict(s.extra), calibrate_method=CalibrationMethod.MinMax)
    return paths


def native_logits(paths: dict[str, Path], x: np.ndarray) -> dict[str, np.ndarray]:
    from compress.common.ort import make_session, run_batched

    out = {}
    for k, p in paths.items():
        sess = make_session(p, 1, "all")
        out[k] = run_batched(sess, {sess.get_inputs()[0].name: x}, batch_size=64)[0]
    return out


def speed(paths: dict[str, Path], x: np.ndarray, runs: int) -> dict[str, float]:
    """fp32 p50 / int8 p50, interleaved, 1 thread, CPU clock."""
    import onnx

    from compress.bench.latency import measure_interleaved

    name = onnx.load(str(paths["fp32"]), load_external_data=False).graph.input[0].name
    ms = measure_interleaved(list(paths.values()), [{name: x[:1]}] * len(paths), 1, "all", runs, 20)
    return {k: ms[0].stats.p50 / m.stats.p50 for k, m in zip(paths, ms, strict=True)}


def score(logits: dict[str, np.ndarray], y: np.ndarray) -> dict[str, tuple[float, float]]:
    ref = logits["fp32"].argmax(1)
    return {k: (float(np.mean(v.argmax(1) == y)), float(np.mean(v.argmax(1) == ref))) for k, v in logits.items()}


def table(paths, native, native_all, emulated, ratios) -> str:
    head = ("| scheme | fused QLinearConv | test acc, this CPU | agree (test / all 1,797) | "
            "test acc, AVX2 kernels (qemu) | agree, AVX2 | speed vs fp32, this CPU |")
    rows = [head, "|" + "---|" * 7]
    fp_n, fp_q = native["fp32"][0], emulated["fp32"][0] if emulated else None
    for k, p in paths.items():
        conv = fused_ops(p).get("QLinearConv", 0) if k != "fp32" else "-"
        acc, agree = native[k]
        q = (f"{emulated[k][0] * 100:.2f}% ({(emulated[k][0] - fp_q) * 100:+.2f})", f"{emulated[k][1] * 100:.1f}%") \
            if emulated else ("-", "-")
        rows.append(f"| {k} | {conv} | {acc * 100:.2f}% ({(acc - fp_n) * 100:+.2f}) | {agree * 100:.1f}% / "
                    f"{native_all[k][1] * 100:.2f}% | {q[0]} | {q[1]} | {ratios[k]:.2f}x |")
    return "\n".join(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run-dir", type=Path, help="a mobile.yaml run dir (its 00-teacher/model.onnx)")
    ap.add_argument("--runs", type=int, default=200, help="timed runs per model (native only)")
    ap.add_argument("--no-qemu", action="store_true", help="skip the AVX2-kernel run under qemu")
    ap.add_argument("--out", type=Path, default=CACHE / "models", help="where the int8 files go")
    ap.add_argument("--schemes", default="", help="comma-separated row numbers (1-based) to run; all by default")
    args = ap.parse_args()
    fp32, a = teacher_and_data(args.run_dir)
    args.out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    calib = a["x_train"][rng.choice(len(a["x_train"]), 256, replace=False)]
    pick = [SCHEMES[int(i) - 1] for i in args.schemes.split(",")] if args.schemes else SCHEMES
    paths = {"fp32": fp32, **quantize_all(fp32, calib, args.out, pick)}
    x_all = np.concatenate([a["x_train"], a["x_val"], a["x_test"]])
    y_all = np.concatenate([a["y_train"], a["y_val"], a["y_test"]])
    native_all = native_logits(paths, x_all)
    n_test = len(a["x_test"])
    native = score({k: v[-n_test:] for k, v in native_all.items()}, a["y_test"])
    emulated = None
    if not args.no_qemu:
        if not haswell.available():
            sys.exit(haswell.SKIP)
        emulated = score(haswell.run_models({k: (p, "all") for k, p in paths.items()}, a["x_test"],
                                            args.out, timeout=7200), a["y_test"])
    ratios = speed(paths, a["x_test"], args.runs)
    model, flags = cpu_info()
    print(f"CPU: {model}; VNNI: {'yes' if {'avx512_vnni', 'avx_vnni'} & flags else 'no'}; "
          f"isa: auto here -> {detect_preset().name} ({detect_preset().reason})")
    print(f"onnxruntime {__import__('onnxruntime').__version__}; test split {n_test} images; "
          f"fused int8 ops counted in ORT's optimized graph on this CPU ({', '.join(FUSED_OPS[:3])}...)\n")
    print(table(paths, native, score(native_all, y_all), emulated, ratios))
    print("\nPresets: " + "; ".join(f"{k} = {p.scheme()}" for k, p in INT8_PRESETS.items()))


if __name__ == "__main__":
    main()
