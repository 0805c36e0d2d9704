"""A stage folder is swapped in whole with its stage.json; resume takes it back only under the
same key with every file as recorded, and says on the console why it does not."""

from __future__ import annotations

import io
import json

import pytest

from compress.artifacts import ModelArtifact, StageResult
from compress.common.console import Console, use
from compress.data.sources import DataInfo
from compress.engine.stage_folder import StageFolder
from compress.stage_reports import ExportReport

INFO = DataInfo(input_shape=(1, 8, 8), num_classes=10)


@pytest.fixture
def console():
    out = io.StringIO()
    use(Console(stream=out))
    yield out
    use(Console())


def _committed(tmp_path) -> StageFolder:
    folder = StageFolder(tmp_path, "02-export")
    tmp = folder.fresh_tmp()
    (tmp / "model.onnx").write_bytes(b"an onnx file's bytes")
    (tmp / "samples.npz").write_bytes(b"sample inputs")
    art = ModelArtifact.from_onnx("student", tmp / "model.onnx", params=12)
    report = ExportReport(max_abs_diff=1e-6, top1_agreement=1.0, parity_samples=8,
                          parity_split="test", bytes=20)
    folder.commit(StageResult(art, report, publish=[art], files=["samples.npz"]),
                  {"name": folder.name, "kind": "export", "key": "k1", "seconds": 1.5,
                   "device": "cpu", "config": {"opset": 18}}, None)
    return folder


def test_a_committed_folder_resumes_under_its_key(tmp_path, console):
    folder = _committed(tmp_path)
    assert not folder.tmp.exists() and (folder.final / "stage.json").is_file()
    found = folder.resume("k1", None, INFO)
    assert found.model.path == folder.final / "model.onnx" and found.model.meta == {"params": 12}
    assert [p.name for p in found.published] == ["student"]
    assert found.record.metrics["max_abs_diff"] == 1e-6 and found.record.seconds == 1.5
    assert console.getvalue() == ""  # nothing refused, nothing said


def test_no_record_is_silent(tmp_path, console):
    assert StageFolder(tmp_path, "01-distill").resume("k1", None, INFO) is None
    assert console.getvalue() == ""


def test_another_key_is_refused_and_said(tmp_path, console):
    folder = _committed(tmp_path)
    assert folder.resume("k2", None, INFO) is None
    assert console.getvalue() == (
        "[02-export] not resumed: its resume key changed (the config, an input model, the data or "
        "the device differ from the recorded run); running it again\n")


@pytest.mark.parametrize("name", ["samples.npz", "model.onnx"])
def test_a_changed_file_is_named(tmp_path, console, name):
    folder = _committed(tmp_path)
    (folder.final / name).write_bytes(b"edited")
    assert folder.resume("k1", None, INFO) is None
    assert console.getvalue() == (f"[02-export] not resumed: {name} changed since it was recorded "
                                  "(its sha256 differs); running it again\n")
    (folder.final / name).unlink()
    assert folder.resume("k1", None, INFO) is None
    assert console.getvalue().splitlines()[-1] == (
        f"[02-export] not resumed: {name} is missing from {folder.final}; running it again")


def test_an_unreadable_record_is_said(tmp_path, console):
    folder = _committed(tmp_path)
    record = folder.final / "stage.json"
    written = json.loads(record.read_text())
    record.write_text("{not json")
    assert folder.resume("k1", None, INFO) is None
    record.write_text(json.dumps({k: v for k, v in written.items() if k != "output"}))
    assert folder.resume("k1", None, INFO) is None
    record.write_text(json.dumps({**written, "files": {"samples.npz": 7}}))
    assert folder.resume("k1", None, INFO) is None
    assert console.getvalue().splitlines() == [
        "[02-export] not resumed: stage.json is unreadable (not valid JSON (line 1: Expecting "
        "property name enclosed in double quotes)); running it again",
        "[02-export] not resumed: stage.json is unreadable (missing key 'output'); running it again",
        "[02-export] not resumed: stage.json is unreadable (key 'files.samples.npz': Input should "
        "be a valid string (got 7)); running it again"]


def test_the_record_holds_the_engine_part_and_the_result(tmp_path):
    record = _committed(tmp_path).record()
    assert (record.name, record.kind, record.key, record.seconds, record.device) == (
        "02-export", "export", "k1", 1.5, "cpu")
    assert record.status == "done" and record.input_sha256 is None and record.finished("k1")
    assert record.output.path == "model.onnx" and record.output.meta == {"params": 12}
    assert list(record.files) == ["samples.npz"] and len(record.files["samples.npz"]) == 64
    assert record.metrics["parity_split"] == "test" and not record.finished("k2")
