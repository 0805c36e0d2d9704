"""A finished run's ONNX models and its bundle on AVX2-only int8 kernels (qemu -cpu Haswell).

    python benchmarks/avx2_kernels.py RUN_DIR [--json OUT]

For a CPU without AVX-512 VNNI, the question is whether the run's int8 model keeps its accuracy
there: ONNX Runtime's AVX2 int8 kernels saturate where VNNI's do not (U8S8 weights use 7 bits).
Under ``qemu-x86_64 -cpu Haswell`` ORT picks those AVX2 kernels even on a VNNI host
(tests/quant/haswell.py). This script, for a classification run:

- measures every ONNX model of report.json (teacher, students, int8) on the run's **test** split
  twice: on this CPU's kernels and on the AVX2 kernels, and prints accuracy on each, top-1
  agreement and max abs difference between the two;
- runs the bundle's own ``runner.py --eval`` on the AVX2 kernels (hashes, the manifest's
  tolerance).

Timing under emulation means nothing: no latency is reported. Whether int8 *pays* on an AVX2
CPU can only be measured on one; the run's quantize stage records what it measured where it ran.
Fetch qemu first: ``bash benchmarks/qemu/fetch_qemu.sh``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.quant import haswell  # noqa: E402  (the qemu recipe the tests use)


class Bad(Exception):
    """Bad input: one line, exit 2."""


def _test_split(run_dir: Path):
    import torch

    from compress.config.pipeline import load_config
    from compress.data.sources import INPUT, load_data

    cfg, _ = load_config(run_dir / "config.resolved.yaml")
    if cfg.task != "classification":
        raise Bad(f"{run_dir}: task {cfg.task!r}; this check is for classification runs")
    data = load_data(cfg.data, cfg.seed)
    xs, ys = zip(*(data.test[i] for i in range(len(data.test))), strict=True)
    x = torch.stack([i[INPUT] if isinstance(i, dict) else i for i in xs]).numpy().astype(np.float32)
    return cfg, x, np.asarray([int(y) for y in ys])


def _native(path: Path, level: str, x: np.ndarray) -> np.ndarray:
    """First outputs on this CPU's kernels, in the batches the qemu child uses (64, or fixed)."""
    from compress.common.ort import make_session, run_batched

    sess = make_session(path, 1, level)
    return run_batched(sess, {sess.get_inputs()[0].name: x}, batch_size=64)[0]


def _bundle_eval(bundle: Path) -> dict:
    env = {**os.environ, "COMPRESS_ISA": "x86-avx2", "OMP_NUM_THREADS": "1"}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "eval.json"
        proc = subprocess.run([str(haswell.QEMU), "-cpu", haswell.CPU, sys.executable,
                               str(bundle / "runner.py"), str(bundle), "--eval", "--json", str(out)],
                              env=env, capture_output=True, text=True, timeout=1800)
        result = json.loads(out.read_text()) if out.is_file() else {}
    check = result.get("check") or {}
    return {"exit": proc.returncode, "passed": check.get("passed"), "precision": check.get("precision"),
            "rows": check.get("rows"), "stderr": proc.stderr.strip().splitlines()[-1:]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_dir", type=Path)
    p.add_argument("--json", type=Path, help="also write the results as JSON")
    args = p.parse_args(argv)
    if not haswell.available():
        print(f"error: {haswell.SKIP}", file=sys.stderr)
        return 2
    run_dir = args.run_dir.resolve()
    try:
        for name in ("report.json", "config.resolved.yaml"):
            if not (run_dir / name).is_file():
                raise Bad(f"{args.run_dir}: no {name}; give a finished run directory")
        report = json.loads((run_dir / "report.json").read_text())
        cfg, x, y = _test_split(run_dir)
    except Bad as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    level = cfg.target.opt_level
    models = {m["name"]: run_dir / m["path"] for m in report["models"] if str(m["path"]).endswith(".onnx")}
    with tempfile.TemporaryDirectory() as tmp:
        avx2 = haswell.run_models({k: (v, level) for k, v in models.items()}, x, Path(tmp), timeout=3600)
    rows = []
    for name, path in models.items():
        here, there = _native(path, level, x), avx2[name]
        n = len(there)  # a fixed batch drops the tail on both sides alike
        rows.append({"model": name, "precision": next(m["precision"] for m in report["models"]
                                                     if m["name"] == name),
                     "samples": n, "accuracy_here": round(float((here[:n].argmax(1) == y[:n]).mean()), 4),
                     "accuracy_avx2": round(float((there.argmax(1) == y[:n]).mean()), 4),
                     "top1_agreement": round(float((here[:n].argmax(1) == there.argmax(1)).mean()), 4),
                     "max_abs_diff": float(np.abs(here[:n] - there).max())})
    q = next((s["metrics"] for s in report["stages"] if s["kind"] == "quantize"), {})
    scheme = (f"{q.get('target')}: activations {q.get('activation_type')}, weights "
              f"{q.get('weight_type')}, reduce_range {q.get('reduce_range')}, per_channel "
              f"{q.get('per_channel')}") if q else None
    result = {"run": str(run_dir), "final": report["final"], "split": "test", "scheme": scheme,
              "quantize_kept": q.get("kept"), "quantize_reason": q.get("reason"), "models": rows}
    if (run_dir / "bundle" / "manifest.json").is_file():
        result["bundle_eval_avx2"] = _bundle_eval(run_dir / "bundle")
    print(f"{run_dir.name}: test split, {len(y)} samples; AVX2 kernels = qemu -cpu {haswell.CPU} "
          "(no timing under emulation)")
    print("| model | precision | accuracy here | accuracy AVX2 kernels | top-1 agreement | max abs diff |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['precision']} | {r['accuracy_here']:.4f} | {r['accuracy_avx2']:.4f} "
              f"| {r['top1_agreement']:.4f} | {r['max_abs_diff']:.3g} |")
    print(f"quantize ({result['scheme']}): kept {result['quantize_kept']}: {result['quantize_reason']}")
    if "bundle_eval_avx2" in result:
        b = result["bundle_eval_avx2"]
        print(f"bundle runner --eval on AVX2 kernels: exit {b['exit']}, passed {b['passed']} "
              f"({b['precision']} tolerance)")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    bad = "bundle_eval_avx2" in result and result["bundle_eval_avx2"]["exit"] != 0
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
