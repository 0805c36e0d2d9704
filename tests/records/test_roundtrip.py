"""Every record a real run writes reads back into its type and writes out again byte for byte:
each stage.json, report.json and search.json of a tiny pipeline (every stage kind but package,
with gates) and of a tiny search."""

from __future__ import annotations

import json

import pytest
import yaml
from _util import tiny_config
from click.testing import CliRunner

from compress.cli import cli
from compress.records import RunReport, SearchRecord, StageRecord, Unread

RECORDS = {"stage.json": StageRecord, "report.json": RunReport, "search.json": SearchRecord}


def _invoke(tmp, cfg: dict, *args: str):
    path = tmp / "pipe.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    result = CliRunner().invoke(cli, [*args[:1], str(path), "--out", str(tmp / "run"), *args[1:]])
    assert result.exit_code == 0, result.output
    return tmp / "run"


@pytest.fixture(scope="module")
def pipeline_run(tmp_path_factory):
    cfg = tiny_config()
    cfg["stages"] = [{"distill": {"epochs": 1, "lr": 0.01}},
                     {"prune": {"ratio": 0.25, "epochs": 0}},
                     {"export": {"opset": 18}},
                     {"quantize": {"mode": "static", "calibration_samples": 64}},
                     {"benchmark": {}}]
    cfg["gates"] = {"min_accuracy": 0.0}
    return _invoke(tmp_path_factory.mktemp("pipeline"), cfg, "pipeline", "--no-progress")


@pytest.fixture(scope="module")
def search_run(tmp_path_factory):
    cfg = tiny_config()
    cfg["name"] = "tiny-search"
    cfg["search"] = {"space": {"student.kwargs.width": [2, 4]}, "sampler": "grid",
                     "constraints": {"max_accuracy_drop": 0.9}, "probe": False,
                     "confirm": {"seeds": 1, "top": 1}}  # a seed check goes round trip too
    return _invoke(tmp_path_factory.mktemp("search"), cfg, "search")


def _written(root) -> list:
    return [(p, RECORDS[p.name]) for p in sorted(root.rglob("*.json")) if p.name in RECORDS]


def _round_trips(root, tmp_path) -> list:
    found = _written(root)
    for n, (path, cls) in enumerate(found):
        back = cls.load(path).dump(tmp_path / f"{n}-{path.name}")
        assert back.read_bytes() == path.read_bytes(), path
    return found


def test_every_record_of_a_pipeline_run_round_trips(pipeline_run, tmp_path):
    found = _round_trips(pipeline_run, tmp_path)
    stages = [p.parent.name for p, cls in found if cls is StageRecord]
    assert stages == ["00-teacher", "01-distill", "02-prune", "03-export", "04-quantize",
                      "05-benchmark"]
    report = RunReport.load(pipeline_run / "report.json")
    assert [s.dir for s in report.stages] == stages
    # every stage's metrics read as its kind's typed report, none left unread
    assert [type(s.report).__name__ for s in report.stages] == [
        "TeacherReport", "DistillReport", "PruneReport", "ExportReport", "QuantizeReport",
        "BenchmarkReport"]
    assert [g.gate for g in report.gates] == ["min_accuracy"] and report.gates[0].passed
    assert report.model(report.final) is not None
    # the measurements a stage recorded are the models report.json lists
    bench = StageRecord.load(pipeline_run / "05-benchmark" / "stage.json")
    assert [m.as_dict() for m in bench.measurements] == [m.as_dict() for m in report.models]
    assert bench.output.format == "passthrough" and bench.input_sha256 is not None


def test_every_record_of_a_search_round_trips(search_run, tmp_path):
    found = _round_trips(search_run, tmp_path)
    names = [p.relative_to(search_run).as_posix() for p, _ in found]
    assert "report.json" in names and "search/search.json" in names
    assert sum(n.startswith("search/trial-") and n.endswith("stage.json") for n in names) >= 6
    report, search = RunReport.load(search_run / "report.json"), SearchRecord.load(
        search_run / "search" / "search.json")
    assert report.search.chosen == search.chosen and report.search.chosen_run_seconds > 0
    assert search.chosen_run_seconds is None  # only report.json's copy says how long it ran
    # the choice was confirmed at seed 1: one check, in the chosen trial's record
    assert search.confirm.seeds == [1] and search.confirm.candidates == [search.chosen]
    assert [c.seed for c in search.trial(search.chosen).seeds] == [1]
    assert [t.number for t in search.trials] == [0, 1]
    assert [t.state for t in search.trials] == ["complete", "complete"]
    by_width = {t.params["student.kwargs.width"]: t for t in search.trials}
    # params are the searched values; params_count the model's: the width-4 student holds more
    assert sorted(by_width) == [2, 4] and by_width[2].params_count < by_width[4].params_count

    assert all(not isinstance(s.report, Unread) for s in report.stages)
    raw = json.loads((search_run / "report.json").read_text())
    assert set(raw["search"]["trials"][0]) >= {"number", "params", "state", "val_quality",
                                               "p50_ms", "bytes", "seconds"}
