"""The search on a user's own project: `python:` factories beside the search YAML, run from
another folder without PYTHONPATH; progress within each trial; every trial failing exits 1
naming the first error; a missed constraint says which and by how much."""

from __future__ import annotations

import json
import os
import re
import sys

import pytest
import yaml
from click.testing import CliRunner

from compress.cli import cli
from compress.search.study import UNKNOWN, EpochMetrics, epoch_line, missed

FACTORIES = '''
import torch
from sklearn.datasets import load_digits
from torch.utils.data import TensorDataset


def digits():
    d = load_digits()
    x = torch.tensor(d.images[:600], dtype=torch.float32)[:, None] / 16
    return TensorDataset(x, torch.tensor(d.target[:600]))


def mlp(hidden=32):
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, hidden), torch.nn.ReLU(),
                               torch.nn.Linear(hidden, 10))
'''


def _project(tmp_path, module: str, space: dict, constraints: dict) -> tuple:
    """A project folder holding the factories and the search YAML that names them."""
    proj = tmp_path / "proj"
    proj.mkdir()
    (proj / f"{module}.py").write_text(FACTORIES)
    cfg = {
        "version": 1, "name": "user-search", "seed": 0, "device": "cpu",
        "data": {"source": "python", "python": f"{module}:digits", "batch_size": 64},
        "teacher": {"python": f"{module}:mlp", "kwargs": {"hidden": 64},
                    "train": {"epochs": 2, "lr": 0.01}},
        "student": {"python": f"{module}:mlp", "kwargs": {"hidden": 8}},
        "stages": [{"distill": {"epochs": 2, "lr": 0.01}}, {"export": {"opset": 18}},
                   {"benchmark": {}}],
        "target": {"runs": 20, "warmup": 2},
        "search": {"space": space, "sampler": "grid", "trials": 2, "constraints": constraints,
                   "probe": False,  # every trial trained, none stopped untrained
                   "confirm": {"seeds": 0}},  # confirming is tested on its own below
    }
    (proj / "search.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    return proj, elsewhere


def _search(config: str, out: str, *extra: str):
    return CliRunner().invoke(cli, ["search", config, "--out", out, *extra])


@pytest.fixture
def no_pythonpath(monkeypatch):
    monkeypatch.delenv("PYTHONPATH", raising=False)
    before = list(sys.path)
    yield
    sys.path[:] = before


def test_python_factories_beside_the_yaml_work_in_every_trial_from_another_folder(
        tmp_path, monkeypatch, no_pythonpath):
    proj, elsewhere = _project(tmp_path, "h2_user_factories", {"student.kwargs.hidden": [8, 16]},
                               {"max_accuracy_drop": 1.0})
    monkeypatch.chdir(elsewhere)
    res = _search(os.path.join("..", "proj", "search.yaml"), "run")
    sys.modules.pop("h2_user_factories", None)
    assert res.exit_code == 0, res.output
    record = json.loads((elsewhere / "run" / "search" / "search.json").read_text())
    assert [t["state"] for t in record["trials"]] == ["complete", "complete"]
    assert record["counts"]["failed"] == 0 and record["chosen"] in (0, 1)
    report = json.loads((elsewhere / "run" / "report.json").read_text())
    # the chosen trial's run: the teacher and the student measured on test, in the user's folder
    assert [m["name"] for m in report["models"]][0] == "teacher" and len(report["models"]) == 2
    assert {m["split"] for m in report["models"]} == {"test"}
    # a line per training epoch of each trial, with its step and the validation metric
    for n in (0, 1):
        lines = re.findall(rf"^trial {n}: 01-distill epoch (\d)/2  loss \d+\.\d{{4}}  "
                           r"val_accuracy \d\.\d{4}$", res.output, flags=re.M)
        assert lines == ["1", "2"]
    # the teacher trains in the first trial; the second fetches it from the search's store
    assert len(re.findall(r"^trial 0: 00-teacher epoch \d/2  ", res.output, flags=re.M)) == 2
    assert re.findall(r"^trial 1: 00-teacher", res.output, flags=re.M) == []


def test_every_trial_failing_exits_1_naming_the_first_error(tmp_path, monkeypatch, no_pythonpath):
    proj, elsewhere = _project(tmp_path, "h2_failing_factories", {"student.kwargs.width": [3]},
                               {"max_accuracy_drop": 1.0})
    monkeypatch.chdir(elsewhere)
    res = _search(str(proj / "search.yaml"), "run", "-q")
    sys.modules.pop("h2_failing_factories", None)
    assert res.exit_code == 1, res.output
    assert res.output.splitlines()[-1] == (
        "error: search: all 3 trials failed; the first, trial 0 (student.kwargs.width=3): "
        "student.kwargs: h2_failing_factories:mlp: mlp() got an unexpected keyword argument 'width'")


def test_a_missed_constraint_says_which_and_by_how_much():
    assert missed({"max_accuracy_drop": 0.01234567, "max_latency_ms": -0.002, "max_bytes": 2048.0}) \
        == "misses max_accuracy_drop by 0.01235, max_bytes by 2048"
    assert missed({"min_quality": UNKNOWN}) == "misses min_quality (not measured)"
    assert missed({"none": 0.0}) == "meets every constraint"


def test_a_progress_line_names_the_trial_the_step_the_loop_and_the_epoch():
    m = EpochMetrics("prune step 2", 3, 20, 0.123456, "accuracy", 0.97123, stage="02-prune",
                     kind="prune")
    assert epoch_line(7, m) == ("trial 7: 02-prune (prune step 2) epoch 3/20  loss 0.1235  "
                                "val_accuracy 0.9712")


def test_a_search_confirms_its_choice_at_another_seed(tmp_path, monkeypatch, no_pythonpath):
    """The chosen trial is trained again at seed 1 in its own folder (another split of the user's
    data, another teacher), and the recorded check is that run's final model measured on seed
    1's validation split."""
    import numpy as np
    import onnxruntime as ort

    from compress.config.pipeline import PipelineConfig
    from compress.data.sources import load_data

    proj, elsewhere = _project(tmp_path, "h2_confirm_factories", {"student.kwargs.hidden": [8]},
                               {"max_accuracy_drop": 1.0})
    raw = yaml.safe_load((proj / "search.yaml").read_text())
    raw["search"]["confirm"] = {"seeds": 1, "top": 1}
    (proj / "search.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    monkeypatch.chdir(elsewhere)
    res = _search(str(proj / "search.yaml"), "run")
    assert res.exit_code == 0, res.output
    assert "search: confirming trial 0 at seed 1 (student.kwargs.hidden=8)" in res.output
    assert re.search(r"^search: trial 0 held at seeds 1 as well: worst drop -?\d\.\d{4} below "
                     r"its teacher, spread \d\.\d{4} \(validation\)$", res.output, flags=re.M)
    search = json.loads((elsewhere / "run" / "search" / "search.json").read_text())
    assert search["confirm"]["seeds"] == [1] and search["confirm"]["candidates"] == [0]
    c = search["confirm"]
    assert (f"search: confirmed at seeds 1: 1 candidates trained again; the chosen trial's worst "
            f"seed is {c['worst_drop']:.4f} below its teacher, spread {c['spread']:.4f} "
            "(validation)") in res.output
    check = search["trials"][0]["seeds"][0]
    assert check["seed"] == 1 and check["feasible"] is True and check["run"] == "trial-0000/seed-1"
    # measured again here, on seed 1's own validation split
    seed_dir = elsewhere / "run" / "search" / "trial-0000" / "seed-1"
    stage = json.loads((seed_dir / "02-export" / "stage.json").read_text())
    sess = ort.InferenceSession(str(seed_dir / "02-export" / stage["output"]["path"]),
                                providers=["CPUExecutionProvider"])
    monkeypatch.syspath_prepend(str(proj))
    raw.pop("search")
    data = PipelineConfig.model_validate(raw).data
    val1, val0 = load_data(data, seed=1).val, load_data(data, seed=0).val
    sys.modules.pop("h2_confirm_factories", None)
    name = sess.get_inputs()[0].name
    right = sum(int(np.argmax(sess.run(None, {name: x["input"][None].numpy()})[0]) == int(y))
                for x, y in val1)
    assert check["val_quality"] == pytest.approx(right / len(val1), abs=1e-6)
    assert check["val_quality"] != search["trials"][0]["val_quality"] or \
        [int(y) for _, y in val1] != [int(y) for _, y in val0]  # another split at seed 1
