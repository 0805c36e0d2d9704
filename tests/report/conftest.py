"""Report dicts in the shape the pipeline writes (report.json), built here so the report code is
tested without running a pipeline; raw latency samples are written as .npy like the benchmark."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest

MACHINE = {"cpu": "Intel(R) Xeon(R) Platinum 8480+", "flags": ["avx2", "avx512f", "avx512_vnni"],
           "cores": 2, "os": "Linux-6.1-x86_64-with-glibc2.36"}
VERSIONS = {"python": "3.11.2", "torch": "2.13.0+cpu", "onnxruntime": "1.32.0"}
# name, stage, precision, bytes, params, macs, accuracy, p50 ms
MODELS = [("teacher", "teacher", "fp32", 2_723_000, 696_042, 105_760_000, 0.9972, 0.83),
          ("student", "distill", "fp32", 82_000, 19_800, 3_200_000, 0.9750, 0.060),
          ("student-pruned", "prune", "fp32", 48_000, 11_200, 1_800_000, 0.9694, 0.045),
          ("student-int8", "quantize", "int8", 21_000, 11_200, 1_800_000, 0.9667, 0.031)]


def write_samples(run_dir: Path, name: str, p50: float, n: int = 200, seed: int = 0) -> str:
    """Per-run latencies around ``p50`` (lognormal, a few slow outliers) saved like the benchmark."""
    rng = np.random.default_rng(seed)
    ms = p50 * rng.lognormal(0.0, 0.04, n)
    ms[:: max(n // 20, 1)] *= 1.6  # the odd preempted run
    rel = f"05-benchmark/latency/{name}.npy"
    (run_dir / rel).parent.mkdir(parents=True, exist_ok=True)
    np.save(run_dir / rel, ms.astype(np.float64))
    return rel


def model_entry(run_dir: Path, spec: tuple, teacher_p50: float, samples: bool = True) -> dict:
    name, stage, precision, size, params, macs, acc, p50 = spec
    m = {"name": name, "stage": stage, "path": f"{stage}/model.onnx", "sha256": "ab" * 32,
         "bytes": size, "params": params, "macs": macs, "precision": precision,
         "accuracy": acc, "split": "test", "quality": {"accuracy": acc},
         "task": "classification", "metric": "accuracy", "higher_is_better": True,
         "latency_ms": {"p50": p50, "p90": p50 * 1.05, "p99": p50 * 1.3, "mean": p50 * 1.02,
                        "std": p50 * 0.05},
         "threads": 1, "opt_level": "all", "runs": 200,
         "speedup_vs_teacher": round(teacher_p50 / p50, 3)}
    if samples:
        m["samples"] = write_samples(run_dir, name, p50, seed=len(name))
    return m


def stages() -> list[dict]:
    hist = [{"epoch": e, "loss": 1.0 / e, "val_accuracy": 0.90 + 0.01 * e} for e in range(1, 6)]
    rec = [[{"epoch": e, "loss": 0.3 / e, "val_accuracy": 0.95 + 0.005 * e} for e in (1, 2)]
           for _ in range(2)]
    traj = [{"step": s, "ratio": r, "params": 19_800 - 4000 * s, "macs": 3_200_000 - 700_000 * s,
             "p50_ms": 0.06 - 0.007 * s, "speedup": 1 + 0.15 * s, "acc_pruned": 0.6 - 0.1 * s,
             "acc_bn": 0.9 - 0.02 * s, "acc_recovered": 0.972 - 0.002 * s}
            for s, r in ((1, 0.125), (2, 0.25))]
    trials = [{"float_layers": [], "accuracy": 0.961, "top1_agreement": 0.985, "cosine": 0.998,
               "p50_ms": 0.030, "fp32_p50_ms": 0.045, "speedup": 1.5},
              {"float_layers": ["conv1"], "accuracy": 0.9667, "top1_agreement": 0.993,
               "cosine": 0.999, "p50_ms": 0.031, "fp32_p50_ms": 0.045, "speedup": 1.45}]
    # the package stage's shape: model -> execution provider -> numbers
    readiness = {"student-int8": {
        "nnapi": {"fraction": 1.0, "partitions": 1, "unsupported_ops": []},
        "coreml": {"fraction": 0.8, "partitions": 2, "unsupported_ops": ["Flatten", "QuantizeLinear"]}}}
    return [
        {"name": "teacher", "kind": "teacher", "dir": "00-teacher", "status": "done",
         "seconds": 40.0, "metrics": {"val_accuracy": 0.995, "history": hist}},
        {"name": "distill", "kind": "distill", "dir": "01-distill", "status": "done",
         "seconds": 30.5, "metrics": {"val_accuracy": 0.975, "history": hist}},
        {"name": "prune", "kind": "prune", "dir": "02-prune", "status": "done", "seconds": 12.0,
         "metrics": {"trajectory": traj, "histories": rec}},
        {"name": "export", "kind": "export", "dir": "03-export", "status": "done",
         "seconds": 2.0, "metrics": {"max_abs_diff": 1.2e-6, "top1_agreement": 1.0}},
        {"name": "quantize", "kind": "quantize", "dir": "04-quantize", "status": "done",
         "seconds": 8.0, "metrics": {"trials": trials, "kept": ["conv1"],
                                     "reason": "accuracy drop 0.83 pp > 0.5 pp with all int8"}},
        {"name": "benchmark", "kind": "benchmark", "dir": "05-benchmark", "status": "done",
         "seconds": 20.0, "metrics": {}},
        {"name": "package", "kind": "package", "dir": "06-package", "status": "done",
         "seconds": 1.0, "metrics": {"readiness": readiness}},
    ]


def build_report(run_dir: Path, scale: dict[str, float] | None = None,
                 acc_shift: dict[str, float] | None = None, samples: bool = True) -> dict:
    """A finished run's report; ``scale``/``acc_shift`` change a model's p50 / accuracy."""
    scale, acc_shift = scale or {}, acc_shift or {}
    specs = [(n, s, pr, b, p, mc, acc + acc_shift.get(n, 0.0), p50 * scale.get(n, 1.0))
             for n, s, pr, b, p, mc, acc, p50 in MODELS]
    models = [model_entry(run_dir, sp, specs[0][7], samples) for sp in specs]
    return {"pipeline": "digits-mobile", "config_sha256": "cd" * 32, "device": "cpu",
            "status": "done", "final": "student-int8", "versions": dict(VERSIONS),
            "machine": copy.deepcopy(MACHINE), "stages": stages(), "models": models}


def failed_report() -> dict:
    """A run whose prune stage failed: two stages, no models, no final."""
    st = stages()[:3]
    st[2] = {"name": "prune", "kind": "prune", "dir": "02-prune", "status": "failed",
             "seconds": 0.4, "metrics": {},
             "error": "stage prune: <script>alert(1)</script> ratio 0.99 leaves no channels"}
    return {"pipeline": "digits-mobile", "config_sha256": "cd" * 32, "device": "cpu",
            "status": "failed", "final": None, "versions": dict(VERSIONS),
            "machine": copy.deepcopy(MACHINE), "stages": st, "models": []}


def save_run(run_dir: Path, report: dict) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "report.json").write_text(json.dumps(report, indent=2))
    return run_dir


@pytest.fixture
def run_dir(tmp_path) -> Path:
    return tmp_path / "run"


@pytest.fixture
def report(run_dir) -> dict:
    return build_report(run_dir)
