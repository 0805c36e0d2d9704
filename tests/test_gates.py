"""Gates on the final model's measurement: each gate's value, limit, verdict and message, the
teacher-relative drop for both metric directions, and the baseline gate on a real ONNX file."""

from __future__ import annotations

import pytest

from compress.artifacts import ModelMeasurement
from compress.config.pipeline import Gates
from compress.errors import GateError
from compress.gates import check_gates


def measured(name: str, accuracy: float, p50: float, higher_is_better: bool = True,
             path: str = "m.onnx") -> ModelMeasurement:
    return ModelMeasurement(
        name=name, stage=name, path=path, sha256="ab" * 32, bytes=1000, params=10, macs=100,
        precision="fp32", accuracy=accuracy, split="test", quality={"accuracy": accuracy},
        task="classification", metric="accuracy", higher_is_better=higher_is_better,
        latency_ms={"p50": p50, "p90": p50}, threads=1, opt_level="all", runs=10)


MODELS = [measured("teacher", 0.99, 0.80), measured("student", 0.97, 0.05)]


def test_each_gate_with_its_numbers(tmp_path):
    gates = Gates(min_accuracy=0.98, max_accuracy_drop=0.015, latency_p50_ms_max=0.1)
    results = check_gates(gates, MODELS, "student", tmp_path)
    rows = [(g.gate, g.value, g.limit, g.passed) for g in results]
    assert rows == [("min_accuracy", 0.97, 0.98, False),
                    ("max_accuracy_drop", pytest.approx(0.02), 0.015, False),
                    ("latency_p50_ms_max", 0.05, 0.1, True)]
    assert [g.message for g in results] == [
        "gates.min_accuracy: student reached 0.9700 (accuracy on test), below 0.98",
        "gates.max_accuracy_drop: student is 0.0200 below the teacher, over 0.015",
        "",
    ]
    # report.json's entries: the baseline-only keys are left out, not null
    assert results[2].as_dict() == {"gate": "latency_p50_ms_max", "value": 0.05, "limit": 0.1,
                                    "passed": True, "message": ""}


def test_limits_hold_at_equality_and_lower_is_better_flips_the_sign(tmp_path):
    ok = check_gates(Gates(min_accuracy=0.97, latency_p50_ms_max=0.05), MODELS, "student", tmp_path)
    assert [g.passed for g in ok] == [True, True]
    # a loss-like metric: the student's 0.30 against the teacher's 0.20 is 0.10 worse
    lower = [measured("teacher", 0.20, 1.0, False), measured("student", 0.30, 0.1, False)]
    (drop,) = check_gates(Gates(max_accuracy_drop=0.05), lower, "student", tmp_path)
    assert (drop.value, drop.passed) == (pytest.approx(0.10), False)
    (better,) = check_gates(Gates(min_accuracy=0.35), lower, "student", tmp_path)
    assert better.passed  # 0.30 is below the 0.35 ceiling of a lower-is-better metric


def test_missing_models_are_refused(tmp_path):
    with pytest.raises(GateError, match="^gates need a benchmark stage: no measured final model in this run$"):
        check_gates(Gates(min_accuracy=0.5), MODELS, "student-int8", tmp_path)
    with pytest.raises(GateError) as e:
        check_gates(Gates(max_accuracy_drop=0.01), MODELS[1:], "student", tmp_path)
    assert str(e.value) == ("gates.max_accuracy_drop needs the teacher measured in this run: no model "
                            "named 'teacher' among the benchmarked models")


@pytest.mark.slow  # ~1 min: the baseline measures to a verdict; tests/engine covers it end to end
def test_baseline_gate_on_a_real_model(tmp_path):
    """The same ONNX file against its own baseline: not slower (ratio near 1), with the verdict
    and the confidence interval of the ratio in the gate's entry."""
    import torch

    from compress.bench.baseline import save_baseline
    from compress.export.torch_onnx import export_onnx

    net = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3), torch.nn.ReLU(), torch.nn.Flatten(),
                              torch.nn.Linear(8 * 14 * 14, 10)).eval()
    model = export_onnx(net, torch.zeros(1, 1, 16, 16), tmp_path / "m.onnx")
    baseline = tmp_path / "baseline.json"
    save_baseline(model, baseline)
    gates = Gates(max_slowdown_vs_baseline=0.5, baseline=baseline)
    (g,) = check_gates(gates, [measured("student", 0.9, 0.05, path="m.onnx")], "student", tmp_path)
    assert g.gate == "max_slowdown_vs_baseline" and g.limit == 1.5
    assert g.passed and 0.5 < g.value < 1.5
    assert g.verdict in ("not slower", "inconclusive") and g.ci[0] <= g.value <= g.ci[1]
    assert g.fingerprint_mismatch == []
