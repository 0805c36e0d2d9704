"""Baseline files: round trip, normalized check, fingerprint mismatch, corrupt and missing files,
a model file as the reference."""

from __future__ import annotations

import json
import os

import numpy as np
import onnx
import pytest

from compress.bench.baseline import (
    FINGERPRINT_KEYS,
    check_against_baseline,
    load_baseline,
    machine_fingerprint,
    save_baseline,
)
from compress.bench.compare import CompareSettings
from compress.bench.reference import conv_mlp_model, reference_model_bytes, reference_sha256
from compress.bench.stats import NOT_SLOWER, SLOWER
from compress.common.files import sha256_file
from compress.errors import InputError

FAST = CompareSettings(max_seconds=1.5, warmup_seconds=0.5)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    folder = tmp_path_factory.mktemp("baseline")
    model = folder / "tiny.onnx"
    onnx.save(conv_mlp_model(channels=8, size=16, convs=2), model)
    out = folder / "nested" / "tiny.json"
    data = save_baseline(model, out, settings=FAST, processes=2)
    return model, out, data


def test_reference_model_is_deterministic():
    assert reference_model_bytes() == reference_model_bytes()
    assert len(reference_sha256()) == 64


def test_baseline_round_trip(saved):
    model, out, data = saved
    assert json.loads(out.read_text()) == json.loads(json.dumps(data))
    assert not list(out.parent.glob(".*.tmp"))  # written atomically: no temp file left
    assert data["model"]["sha256"] == sha256_file(model)
    assert data["inputs"] == {"x": {"dtype": "float32", "shape": [1, 8, 16, 16]}}
    fp = data["fingerprint"]
    assert set(FINGERPRINT_KEYS) <= set(fp)
    assert fp["cores"] == os.cpu_count() and fp["threads"] == 1 and fp["opt_level"] == "all"
    assert fp == machine_fingerprint(1, "all", "cpu")
    sessions = data["sessions"]
    assert [s["process"] for s in sessions] == [0, 0, 0, 0, 1, 1, 1, 1]  # 4 pairs, 2 processes
    assert all(len(s["model_ms"]) == len(s["reference_ms"]) >= 20 for s in sessions)
    # every process times blocks of the sizes the first one chose
    assert len({(s["model_calls"], s["reference_calls"]) for s in sessions}) == 1
    logs = [np.log(min(s["model_ms"]) / min(s["reference_ms"])) for s in sessions]
    assert data["normalized"]["ratio"] == pytest.approx(np.exp(np.mean(logs)), rel=1e-4)
    assert data["spread"]["processes"] == 2 and data["spread"]["pairs"] == 4
    assert data["spread"]["session"] == pytest.approx(
        np.sqrt(sum(np.var(logs[i:i + 4]) * 4 for i in (0, 4)) / 6), rel=1e-3)
    base = load_baseline(out)
    assert base.version == 2 and base.sessions[5].model_ms == sessions[5]["model_ms"]
    assert base.settings.clock == "cpu" and base.reference["sha256"] == reference_sha256()


def test_same_model_is_not_slower(saved):
    model, out, _ = saved
    v = check_against_baseline(model, out, tolerance=0.5, max_seconds=2.0)
    assert v.verdict == NOT_SLOWER and not v.failed()
    assert v.ci_low <= v.ratio <= v.ci_high < 1.5
    assert v.fingerprint_mismatch == []
    assert "relative to the reference workload" in v.message


def test_slower_model_and_fingerprint_mismatch_are_reported(saved, tmp_path):
    model, out, data = saved
    doctored = json.loads(json.dumps(data))
    # as if the model had been 3x faster, relative to the reference, when the baseline was saved
    for session in doctored["sessions"]:
        session["model_ms"] = [x / 3 for x in session["model_ms"]]
    doctored["fingerprint"]["cpu"] = "Fake CPU 9000"
    doctored["fingerprint"]["ort"] = "0.0.1"
    path = tmp_path / "doctored.json"
    path.write_text(json.dumps(doctored))
    v = check_against_baseline(model, path, tolerance=0.5, max_seconds=2.0)
    assert v.verdict == SLOWER and v.failed()
    assert v.ratio == pytest.approx(3.0, rel=0.35) and v.ci_low > 1.5
    now = machine_fingerprint(1, "all", "cpu")
    assert v.fingerprint_mismatch == [f"cpu: 'Fake CPU 9000' -> {now['cpu']!r}",
                                      f"ort: '0.0.1' -> {now['ort']!r}"]
    assert "fingerprint differs from the baseline's: cpu: 'Fake CPU 9000'" in v.message


def test_missing_baseline(tmp_path):
    p = tmp_path / "none.json"
    with pytest.raises(InputError) as e:
        load_baseline(p)
    assert str(e.value) == (f"{p}: baseline file not found (create it with "
                            f"`compress bench MODEL.onnx --save-baseline {p}`)")
    assert e.value.exit_code == 2


@pytest.mark.parametrize(("text", "why"), [
    ("{not json", "invalid JSON: Expecting property name enclosed in double quotes: "
                  "line 1 column 2 (char 1)"),
    ('{"format": "compress-latency-baseline", "version": 1}', "model: Field required"),
    ('{"format": "something-else"}', "format: Input should be 'compress-latency-baseline'"),
    ("[1, 2]", "top level: Input should be a valid dictionary or instance of BaselineFile"),
])
def test_corrupt_baseline(tmp_path, text, why):
    p = tmp_path / "bad.json"
    p.write_text(text)
    with pytest.raises(InputError) as e:
        load_baseline(p)
    assert str(e.value) == f"{p}: not a baseline file ({why})"


def test_baseline_with_unequal_rounds_is_rejected(saved, tmp_path):
    _, _, data = saved
    bad = json.loads(json.dumps(data))
    bad["sessions"][1]["reference_ms"] = bad["sessions"][1]["reference_ms"][:-1]
    p = tmp_path / "bad.json"
    p.write_text(json.dumps(bad))
    with pytest.raises(InputError) as e:
        load_baseline(p)
    assert str(e.value) == (f"{p}: not a baseline file (sessions.1: Value error, model_ms and "
                            "reference_ms must have the same length)")


def test_baseline_from_another_reference_workload(saved, tmp_path):
    _, _, data = saved
    old = json.loads(json.dumps(data))
    old["reference"] = {"version": 0, "sha256": "0" * 64}
    p = tmp_path / "old.json"
    p.write_text(json.dumps(old))
    with pytest.raises(InputError) as e:
        load_baseline(p)
    assert str(e.value) == (f"{p}: saved against reference workload v0, this compress builds "
                            "v1: save the baseline again")


def test_a_model_file_as_the_reference(saved, tmp_path):
    model, builtin, _ = saved
    teacher = tmp_path / "teacher.onnx"
    onnx.save(conv_mlp_model(channels=8, size=16, convs=3), teacher)
    out = tmp_path / "vs-teacher.json"
    data = save_baseline(model, out, settings=FAST, reference=teacher, processes=2)
    assert data["reference"] == {"kind": "file", "path": str(teacher),
                                 "sha256": sha256_file(teacher)}
    # 2 of the teacher's 3 convs: the ratio sits well below 1
    assert 0.3 < data["normalized"]["ratio"] < 0.95
    v = check_against_baseline(model, out, tolerance=0.5, max_seconds=2.0)
    assert v.verdict == NOT_SLOWER
    assert f"its baseline {out} relative to {teacher} (95% CI " in v.message
    with pytest.raises(InputError) as e:
        check_against_baseline(model, builtin, tolerance=0.5, reference=teacher)
    assert str(e.value) == (f"{builtin}: saved against the built-in reference workload, not "
                            f"{teacher}: save the baseline again with that reference")
    onnx.save(conv_mlp_model(channels=8, size=16, convs=2), teacher)  # the teacher changed
    with pytest.raises(InputError) as e:
        check_against_baseline(model, out, tolerance=0.5)
    assert str(e.value) == (f"{out}: reference {teacher} changed since the baseline was saved: "
                            "save the baseline again (pytest --latency-update, or compress bench "
                            "MODEL --save-baseline FILE --reference REF)")
