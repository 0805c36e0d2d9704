"""A record that cannot be read says so in one line naming the file and the bad or missing key;
a record built by its producer's types writes out and reads back whole."""

from __future__ import annotations

import json

import pytest
from _reports import stage_reports

from compress.errors import InputError
from compress.records import (
    ArtifactRecord,
    Failure,
    GateResult,
    Machine,
    ModelMeasurement,
    RunReport,
    StageEntry,
    StageRecord,
    TrialAttrs,
    TrialResult,
)


def _measurement(name: str = "student") -> ModelMeasurement:
    return ModelMeasurement(
        name=name, stage="02-export", path="02-export/model.onnx", sha256="ab" * 32, bytes=9064,
        params=400, macs=37_420, precision="fp32", accuracy=0.1, split="test",
        quality={"accuracy": 0.1}, task="classification", metric="accuracy", higher_is_better=True,
        latency_ms={"p50": 0.0461, "p90": 0.0656}, threads=1, opt_level="all", runs=20)


def _stage_record() -> StageRecord:
    report = stage_reports()["export"]
    art = ArtifactRecord(format="onnx", name="student", path="model.onnx", sha256="cd" * 32,
                         precision="fp32", meta={"params": 400})
    return StageRecord(name="02-export", kind="export", key="k" * 64, seconds=1.25, device="cpu",
                       config={"opset": 18}, status="done", input_sha256="ef" * 32, output=art,
                       published=[art], files={"samples.npz": "01" * 32}, measurements=[],
                       metrics=report.as_dict(), versions={"onnx": "1.23.2"})


def _report() -> RunReport:
    stages = [StageEntry(name=k, kind=k, dir=f"{i:02d}-{k}", status="done", seconds=1.0 + i,
                         metrics=r.as_dict()) for i, (k, r) in enumerate(stage_reports().items())]
    return RunReport(pipeline="tiny", config_sha256="cd" * 32, device="cpu", status="failed",
                     stages=stages, models=[_measurement("teacher"), _measurement()],
                     final="student", versions={"onnxruntime": "1.32.0"},
                     machine=Machine(cpu="AMD EPYC", flags=["avx2"], cores=2),
                     gates=[GateResult(gate="min_accuracy", value=0.1, limit=0.5, passed=False,
                                       message="gates.min_accuracy: student reached 0.1000")],
                     failure=Failure(reason="gate", message="gates.min_accuracy: student reached"))


@pytest.mark.parametrize("record", [_stage_record, _report], ids=["stage", "report"])
def test_a_record_reads_back_what_it_wrote(tmp_path, record):
    rec = record()
    path = rec.dump(tmp_path / "r.json")
    again = type(rec).load(path)
    assert again == rec
    assert again.dump(tmp_path / "again.json").read_bytes() == path.read_bytes()


def test_optional_keys_are_left_out_not_written_as_null(tmp_path):
    data = json.loads(_report().model_copy(update={"gates": None, "failure": None})
                      .dump(tmp_path / "r.json").read_text())
    assert list(data) == ["pipeline", "config_sha256", "device", "status", "stages", "models",
                          "final", "versions", "machine"]
    assert data["machine"] == {"cpu": "AMD EPYC", "flags": ["avx2"], "cores": 2}
    assert "error" not in data["stages"][0]
    # a model's optional figures are part of the contract: kept, as null
    assert data["models"][0]["speedup_vs_teacher"] is None


def _broken(tmp_path, edit) -> str:
    data = json.loads(_report().dump(tmp_path / "report.json").read_text())
    edit(data)
    (tmp_path / "report.json").write_text(json.dumps(data))
    with pytest.raises(InputError) as e:
        RunReport.load(tmp_path / "report.json")
    return str(e.value)


def test_load_names_the_file_and_the_missing_key(tmp_path):
    f = tmp_path / "report.json"
    assert _broken(tmp_path, lambda d: d.pop("pipeline")) == f"{f}: missing key 'pipeline'"
    assert _broken(tmp_path, lambda d: d["models"][1].pop("latency_ms")) == (
        f"{f}: missing key 'models[1].latency_ms'")


def test_load_names_the_bad_key_and_the_value(tmp_path):
    f = tmp_path / "report.json"
    assert _broken(tmp_path, lambda d: d["models"][0].update(bytes="big")) == (
        f"{f}: key 'models[0].bytes': Input should be a valid integer, unable to parse string as "
        "an integer (got 'big')")
    assert _broken(tmp_path, lambda d: d["stages"][2].update(status="half")) == (
        f"{f}: key 'stages[2].status': Input should be 'done', 'skipped' or 'failed' (got 'half')")
    assert _broken(tmp_path, lambda d: d.update(colour="red")) == f"{f}: unexpected key 'colour'"


def test_load_of_a_missing_or_broken_file(tmp_path):
    f = tmp_path / "stage.json"
    with pytest.raises(InputError, match="^") as e:
        StageRecord.load(f)
    assert str(e.value) == f"{f}: not found (expected a stage folder's stage.json (written by the engine))"
    f.write_text("{not json")
    with pytest.raises(InputError) as e:
        StageRecord.load(f)
    assert str(e.value) == f"{f}: not valid JSON (line 1: Expecting property name enclosed in double quotes)"
    f.write_text("[1, 2]")
    with pytest.raises(InputError) as e:
        StageRecord.load(f)
    assert str(e.value) == f"{f}: expected a JSON object, got list"
    data = _stage_record().as_dict()
    data["status"] = "failed"
    f.write_text(json.dumps(data))
    with pytest.raises(InputError) as e:
        StageRecord.load(f)
    assert str(e.value) == f"{f}: key 'status': Input should be 'done' (got 'failed')"


def test_a_trial_result_of_an_earlier_version_reads_its_parameter_count():
    """Studies written before the rename stored the model's parameter count as ``params``."""
    new = TrialResult(val_quality=0.9, teacher_val_quality=0.95, p50_ms=0.04, teacher_p50_ms=0.06,
                      speedup_vs_teacher=1.5, bytes=9064, params_count=400, precision="fp32",
                      final="student", final_path="trial-0000/02-export/model.onnx",
                      teacher_path="trial-0000/00-teacher/model.onnx", feasible=True)
    stored = new.as_dict()
    assert "params" not in stored and stored["params_count"] == 400
    old = {k if k != "params_count" else "params": v for k, v in stored.items()}
    assert TrialResult.model_validate(old) == new
    attrs = TrialAttrs.model_validate({"result": stored, "schedule": 15, "optuna_extra": 1})
    assert attrs.result.params_count == 400 and attrs.schedule == 15 and attrs.stopped is None


def test_records_import_neither_torch_nor_the_search_or_measuring_libraries():
    """records/ stands on floor 2: torch-free, so validate, schema and compare stay light."""
    import subprocess
    import sys

    code = ("import sys, compress.records, compress.stage_reports; print(sorted(m for m in "
            "('torch', 'optuna', 'onnxruntime', 'numpy', 'matplotlib') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
