"""The search section's schema: every searched key is a path --set accepts, every value it may take
is checked by the pipeline's own schema at validate time; a bad one exits 2 naming the YAML path."""

from __future__ import annotations

import copy

import pytest
import yaml
from _util import tiny_config
from click.testing import CliRunner

from compress.cli import cli
from compress.config.pipeline import load_config

SEARCH = {"space": {"student.kwargs.width": [2, 4]}, "objective": "latency",
          "constraints": {"max_accuracy_drop": 0.01}, "trials": 4}


def _write(tmp_path, search: dict):
    cfg = tiny_config()
    cfg["stages"].insert(1, {"prune": {"ratio": 0.25, "round_to": 2, "epochs": 0}})
    cfg["search"] = copy.deepcopy(search)
    path = tmp_path / "search.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def _line(path, text: str) -> int:
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if text in line)


def test_a_valid_space_validates_and_keeps_its_types(tmp_path):
    search = copy.deepcopy(SEARCH)
    search["space"].update({"student.kwargs.depth": [[1, 1], [1]],
                            "stages.1.prune.ratio": {"low": 0.1, "high": 0.5, "step": 0.1}})
    cfg, _ = load_config(_write(tmp_path, search))
    space = cfg.search.space
    assert space["student.kwargs.depth"].choices == [[1, 1], [1]]
    assert space["stages.1.prune.ratio"].grid() == [0.1, 0.2, 0.3, 0.4, 0.5]
    assert cfg.search.sampler == "tpe" and cfg.search.trials == 4


@pytest.mark.parametrize("key, spec, expected", [
    ("stages.1.prune.rate", [0.1, 0.2],
     "search.space.stages.1.prune.rate: no such key stages[1].prune.rate; expected one of: "),
    ("stages.1.prune.ratio", [0.2, 1.5],
     "search.space.stages.1.prune.ratio: choice 1.5 is invalid: stages[1].prune.ratio: must be < 1.0 "
     "(got 1.5)"),
    ("stages.1.prune.ratio", {"low": 0, "high": 0.7},
     "search.space.stages.1.prune.ratio: low 0 is invalid: stages[1].prune.ratio: must be > 0.0 (got 0)"),
    ("stages.7.prune.ratio", [0.1],
     "search.space.stages.7.prune.ratio: stages[7] does not exist (the list has 4 items)"),
    ("stages.2.quantize.mode", ["static"],
     "search.space.stages.2.quantize.mode: stages[2] is a export stage, not quantize"),
    ("student.kwargs.width", {"low": 8, "high": 2},
     "search.space.student.kwargs.width: low must be below high (got low 8, high 2)"),
])
def test_a_bad_path_or_value_exits_2_naming_the_yaml_path(tmp_path, key, spec, expected):
    path = _write(tmp_path, {**SEARCH, "space": {key: spec}})
    res = CliRunner().invoke(cli, ["validate", str(path)])
    assert res.exit_code == 2
    line = _line(path, key)
    assert res.output.startswith(f"error: {path}:{line} {expected}"), res.output
    assert "Traceback" not in res.output


@pytest.mark.parametrize("tie", [2, -0.1])
def test_a_tie_outside_0_to_1_exits_2_naming_its_line(tmp_path, tie):
    path = _write(tmp_path, {**SEARCH, "tie": tie})
    res = CliRunner().invoke(cli, ["validate", str(path)])
    assert res.exit_code == 2
    bound = "<= 1.0" if tie > 1 else ">= 0.0"
    assert res.output == f"error: {path}:{_line(path, 'tie:')} search.tie: must be {bound} (got {tie})\n"


def test_grid_needs_stepped_ranges(tmp_path):
    path = _write(tmp_path, {**SEARCH, "sampler": "grid",
                             "space": {"stages.1.prune.ratio": {"low": 0.1, "high": 0.5}}})
    res = CliRunner().invoke(cli, ["validate", str(path)])
    assert res.exit_code == 2
    assert res.output == (f"error: {path}:{_line(path, 'search:')} search: sampler grid needs choices "
                          "or a range with a step (space 'stages.1.prune.ratio' is continuous)\n")


def test_search_command_refuses_a_pipeline_without_search(tmp_path):
    cfg = tiny_config()
    path = tmp_path / "plain.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    res = CliRunner().invoke(cli, ["search", str(path), "--out", str(tmp_path / "run")])
    assert res.exit_code == 2
    assert res.output == (f"error: {path}: no 'search:' section; expected search.space, objective "
                          "and constraints\n")


@pytest.mark.parametrize(("storage", "expected"), [
    ("study.db", "error: --storage study.db: expected a database URL such as "
                 "postgresql://user:password@host/db or sqlite:///path/study.db\n"),
    ("nosuchdb://host/db", "error: --storage nosuchdb://host/db: cannot open the study database "
                           "(Can't load plugin: sqlalchemy.dialects:nosuchdb)\n"),
])
def test_a_bad_storage_url_exits_2_and_writes_nothing(tmp_path, storage, expected):
    path = _write(tmp_path, SEARCH)
    out = tmp_path / "run"
    res = CliRunner().invoke(cli, ["search", str(path), "--out", str(out), "--storage", storage])
    assert res.exit_code == 2
    assert res.output == expected
    assert not (out / "search").exists() or not any((out / "search").iterdir())
