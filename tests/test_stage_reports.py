"""The typed stage reports: report.json keys as the contract has them, the metric-named keys,
a stored stage read back into its type, and a stored shape that does not fit named, not half-read."""

from __future__ import annotations

import json

import pytest
from _reports import stage_reports

from compress.records.stage_reports import (
    REPORTS,
    DistillReport,
    OnnxTeacherReport,
    PruneReport,
    QuantizeReport,
    TeacherReport,
    Unread,
    read_report,
)


@pytest.mark.parametrize("kind", list(REPORTS))
def test_every_report_reads_back_from_its_json(kind):
    report = stage_reports()[kind]
    stored = json.loads(json.dumps(report.as_dict()))  # what report.json holds
    assert read_report(kind, stored) == report


def test_keys_carry_the_task_metric_and_the_contract_names():
    reports = stage_reports()
    assert list(reports["distill"].as_dict()) == ["val_accuracy", "best_epoch", "samples_per_s", "history",
                                                   "params", "macs"]
    prune = reports["prune"].as_dict()
    assert (prune["val_accuracy_before"], prune["val_accuracy"], prune["metric"]) == (0.975, 0.968, "accuracy")
    assert "history" not in prune["trajectory"][0]  # recovery epochs are stored under histories
    quantize = reports["quantize"].as_dict()
    # the scheme's fields keep report.json's names (target, target_evidence, target_note)
    assert (quantize["target"], quantize["target_evidence"], quantize["target_note"]) == (
        "x86-vnni", "avx512_vnni", "VNNI: U8S8")
    assert {"qat", "auto", "call_floor_ms"}.isdisjoint(quantize)  # absent, not null, when unused
    assert quantize["calibration"] == {"method": "minmax", "samples": 256, "split": "train"}
    embed = DistillReport(metric="cosine_mean", val=0.93, best_epoch=2, samples_per_s=10.0, history=[],
                          params=1, macs=2)
    assert read_report("distill", embed.as_dict()).metric == "cosine_mean"


def test_teacher_shapes():
    untrained = TeacherReport(max_abs_diff=0.0, top1_agreement=1.0, parity_samples=8, parity_split="test",
                              bytes=10, params=3, macs=4)
    assert "val_None" not in untrained.as_dict() and "best_epoch" not in untrained.as_dict()
    assert read_report("teacher", untrained.as_dict()) == untrained
    brought = OnnxTeacherReport(source="t.onnx", params=3, io=["input -> input"], external_data=[])
    assert read_report("teacher", brought.as_dict()) == brought


def test_a_shape_that_does_not_fit_is_named():
    stored = stage_reports()["quantize"].as_dict()
    del stored["kept"]
    got = read_report("quantize", stored)
    assert isinstance(got, Unread) and got.problem == "kept: Field required"
    stored = stage_reports()["quantize"].as_dict()
    stored["kept"] = ["conv1"]  # the shape the old hand-written fixture had
    assert read_report("quantize", stored).problem == "kept: Input should be 'int8' or 'fp32'"
    assert read_report("prune", {}).problem == "no metrics"
    assert read_report("magic", {"a": 1}).problem == "no report type for stage kind 'magic'"
    with pytest.raises(ValueError, match="report_md"):
        PruneReport.model_validate({**stage_reports()["prune"].as_dict(), "report_md": "| a |"})


def test_the_kept_trial_is_the_int8_model():
    q: QuantizeReport = stage_reports()["quantize"]
    assert q.kept_trial() == 1  # the trial whose float layers the int8 model has
    assert q.model_copy(update={"kept": "fp32"}).kept_trial() is None
