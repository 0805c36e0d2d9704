"""Gates: the config's pass/fail limits on the final model's typed measurement (exit 3)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from compress.artifacts import ModelMeasurement
from compress.errors import GateError
from compress.records.report import GateResult

if TYPE_CHECKING:
    from compress.config.pipeline import Gates


def _result(gate: str, value: float, limit: float, passed: bool, message: str) -> GateResult:
    return GateResult(gate=gate, value=value, limit=limit, passed=passed, message="" if passed else message)


def check_gates(gates: Gates, measurements: list[ModelMeasurement], final: str,
                run_dir: Path) -> list[GateResult]:
    """Evaluate ``gates`` on the final model; each result says limit, value and verdict."""
    by_name = {m.name: m for m in measurements}
    model, teacher = by_name.get(final), by_name.get("teacher")
    if model is None:
        raise GateError("gates need a benchmark stage: no measured final model in this run")
    out: list[GateResult] = []
    sign = 1 if model.higher_is_better else -1
    if gates.min_accuracy is not None:
        acc = model.accuracy
        out.append(_result("min_accuracy", acc, gates.min_accuracy, sign * (acc - gates.min_accuracy) >= 0,
                           f"gates.min_accuracy: {model.name} reached {acc:.4f} ({model.metric} on "
                           f"{model.split}), below {gates.min_accuracy:g}"))
    if gates.max_accuracy_drop is not None:
        if teacher is None:
            raise GateError("gates.max_accuracy_drop needs the teacher measured in this run: no "
                            "model named 'teacher' among the benchmarked models")
        drop = sign * (teacher.accuracy - model.accuracy)
        out.append(_result("max_accuracy_drop", drop, gates.max_accuracy_drop, drop <= gates.max_accuracy_drop,
                           f"gates.max_accuracy_drop: {model.name} is {drop:.4f} below the teacher, "
                           f"over {gates.max_accuracy_drop:g}"))
    if gates.latency_p50_ms_max is not None:
        out.append(_result("latency_p50_ms_max", model.p50, gates.latency_p50_ms_max,
                           model.p50 <= gates.latency_p50_ms_max,
                           f"gates.latency_p50_ms_max: {model.name} p50 {model.p50:.4f} ms, "
                           f"over {gates.latency_p50_ms_max:g} ms"))
    if gates.max_slowdown_vs_baseline is not None:
        from compress.bench.baseline import check_against_baseline

        # threads and opt_level come from the baseline file, so old and new are measured alike
        v = check_against_baseline(run_dir / model.path, gates.baseline, gates.max_slowdown_vs_baseline)
        result = _result("max_slowdown_vs_baseline", v.ratio, 1 + gates.max_slowdown_vs_baseline,
                         not v.failed(), f"gates.max_slowdown_vs_baseline: {v.message}")
        out.append(result.model_copy(update={"verdict": v.verdict, "ci": [v.ci_low, v.ci_high],
                                             "fingerprint_mismatch": v.fingerprint_mismatch}))
    return out
