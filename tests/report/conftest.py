"""Run reports built from the records the pipeline writes (``RunReport``, ``ModelMeasurement``,
each stage's typed report), so the report code is tested without running a pipeline and a
fixture cannot drift from what the producers write; raw latency samples are written as .npy
like the benchmark."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from _reports import stage_reports

from compress.records import Failure, Machine, ModelMeasurement, RunReport, StageEntry

MACHINE = Machine(cpu="Intel(R) Xeon(R) Platinum 8480+", flags=["avx2", "avx512f", "avx512_vnni"],
                  cores=2, os="Linux-6.1-x86_64-with-glibc2.36")
MOBILE = Path(__file__).resolve().parents[2] / "pipelines" / "mobile.yaml"
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


def timed_runs(p50: float, slowest_p50: float, runs: int = 200, block: int = 10,
               max_block: int = 500) -> int:
    """How many runs ``measure_interleaved`` times a model: the slowest gets ``runs``, a model k
    times faster about k times as many calls per block (a real run: teacher 300, student 15,000)."""
    speed = max(1.0, slowest_p50 / p50)
    return (runs // block) * max(block, min(max_block, round(block * speed)))


TEST_SAMPLES = 360  # digits' test split (20% of 1,797 images)


def model_entry(run_dir: Path, spec: tuple, teacher_p50: float, samples: bool = True
                ) -> ModelMeasurement:
    name, stage, precision, size, params, macs, acc, p50 = spec
    runs = timed_runs(p50, teacher_p50)
    return ModelMeasurement(
        name=name, stage=stage, path=f"{stage}/model.onnx", sha256="ab" * 32, bytes=size,
        params=params, macs=macs, precision=precision, accuracy=acc, split="test",
        quality={"accuracy": acc}, task="classification", metric="accuracy", higher_is_better=True,
        latency_ms={"p50": p50, "p90": p50 * 1.05, "p99": p50 * 1.3, "mean": p50 * 1.02,
                    "std": p50 * 0.05},
        threads=1, opt_level="all", runs=runs, quality_samples=TEST_SAMPLES,
        samples=write_samples(run_dir, name, p50, runs, seed=len(name)) if samples else None,
        speedup_vs_teacher=round(teacher_p50 / p50, 3))


SECONDS = {"teacher": 40.0, "distill": 30.5, "prune": 12.0, "export": 2.0, "quantize": 8.0,
           "benchmark": 20.0, "package": 1.0}


def stages() -> list[StageEntry]:
    """The stages of a finished run, each holding its typed report as the engine stores it."""
    return [StageEntry(name=kind, kind=kind, dir=f"{i:02d}-{kind}", status="done",
                       seconds=SECONDS[kind], metrics=r.as_dict())
            for i, (kind, r) in enumerate(stage_reports([m[0] for m in MODELS]).items())]


def build_report(run_dir: Path, scale: dict[str, float] | None = None,
                 acc_shift: dict[str, float] | None = None, samples: bool = True) -> RunReport:
    """A finished run's report; ``scale``/``acc_shift`` change a model's p50 / accuracy."""
    scale, acc_shift = scale or {}, acc_shift or {}
    specs = [(n, s, pr, b, p, mc, acc + acc_shift.get(n, 0.0), p50 * scale.get(n, 1.0))
             for n, s, pr, b, p, mc, acc, p50 in MODELS]
    models = [model_entry(run_dir, sp, specs[0][7], samples) for sp in specs]
    return RunReport(pipeline="digits-mobile", config_sha256="cd" * 32, device="cpu",
                     status="done", stages=stages(), models=models, final="student-int8",
                     versions=dict(VERSIONS), machine=MACHINE.model_copy(deep=True))


def failed_report() -> RunReport:
    """A run whose prune stage failed: two stages, no models, no final."""
    st = stages()[:3]
    st[2] = StageEntry(name="prune", kind="prune", dir="02-prune", status="failed", seconds=0.4,
                       error="stage prune: <script>alert(1)</script> ratio 0.99 leaves no channels")
    return RunReport(pipeline="digits-mobile", config_sha256="cd" * 32, device="cpu",
                     status="failed", stages=st, models=[], final=None, versions=dict(VERSIONS),
                     machine=MACHINE.model_copy(deep=True),
                     failure=Failure(reason="error", message=st[2].error))


def save_run(run_dir: Path, report: RunReport, overrides: tuple[str, ...] | None = ()) -> Path:
    """The run directory of ``report``: report.json, and config.resolved.yaml as the engine
    writes it (pipelines/mobile.yaml with ``overrides`` applied; None writes none)."""
    import yaml

    from compress.common.files import write_text
    from compress.config.pipeline import load_config

    run_dir.mkdir(parents=True, exist_ok=True)
    report.dump(run_dir / "report.json")
    if overrides is not None:
        _, raw = load_config(MOBILE, overrides)
        write_text(run_dir / "config.resolved.yaml", yaml.safe_dump(raw, sort_keys=False))
    return run_dir


@pytest.fixture
def run_dir(tmp_path) -> Path:
    return tmp_path / "run"


@pytest.fixture
def report(run_dir) -> RunReport:
    return build_report(run_dir)
