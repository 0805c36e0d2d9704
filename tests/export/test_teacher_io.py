"""Matching an ONNX model's names to a task's, and the rewrite: renames (swapped ones too), zeros
for token_type_ids, pooling of hidden states; checked by running the rewritten graph in ORT."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from compress.common.ort import make_session
from compress.export.teacher_io import DataShape, IOMismatch, apply_plan_, check_fit, plan_io, ports

EMB_IN, EMB_OUT = ("input_ids", "attention_mask"), ("sentence_embedding",)


def _model(nodes, inputs, outputs, inits=()):
    g = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])


def _ints(name, shape=("b", "s")):
    return helper.make_tensor_value_info(name, TensorProto.INT64, list(shape))


def _run(model, feeds):
    onnx.checker.check_model(model)
    return make_session(model.SerializeToString(), 1, "disable").run(None, feeds)


def test_swapped_names_are_renamed_through_temporaries():
    m = _model([helper.make_node("Sub", ["attention_mask", "input_ids"], ["out"])],
               [_ints("attention_mask"), _ints("input_ids")], [_ints("out")])
    i, o = ports(m.graph)
    plan = plan_io(i, o, "embedding", EMB_IN, EMB_OUT,
                   {"input_ids": "attention_mask", "attention_mask": "input_ids"})
    apply_plan_(m, plan, EMB_OUT)
    (got,) = _run(m, {"input_ids": np.array([[5]]), "attention_mask": np.array([[1]])})
    assert got.tolist() == [[4]]  # the model's attention_mask (5) minus its input_ids (1)
    assert [v.name for v in m.graph.output] == ["sentence_embedding"]


def test_an_encoder_gets_zeros_for_token_type_ids_and_mean_pooling():
    # hidden = (ids + 10 * type_ids) as float, repeated over 2 features: [B, S, 2]
    nodes = [helper.make_node("Mul", ["token_type_ids", "ten"], ["t10"]),
             helper.make_node("Add", ["input_ids", "t10"], ["sum"]),
             helper.make_node("Cast", ["sum"], ["f"], to=TensorProto.FLOAT),
             helper.make_node("Unsqueeze", ["f", "axis"], ["f3"]),
             helper.make_node("Concat", ["f3", "f3"], ["last_hidden_state"], axis=-1),
             helper.make_node("Identity", ["attention_mask"], ["unused"])]
    inits = [helper.make_tensor("ten", TensorProto.INT64, [], [10]),
             helper.make_tensor("axis", TensorProto.INT64, [1], [-1])]
    hidden = helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT, ["b", "s", 2])
    m = _model(nodes, [_ints("input_ids"), _ints("attention_mask"), _ints("token_type_ids")],
               [hidden], inits)
    i, o = ports(m.graph)
    plan = plan_io(i, o, "embedding", EMB_IN, EMB_OUT)
    assert plan.zeros == ["token_type_ids"] and plan.pool == "last_hidden_state"
    apply_plan_(m, plan, EMB_OUT)
    ids, mask = np.array([[3, 5, 100]]), np.array([[1, 1, 0]])
    (got,) = _run(m, {"input_ids": ids, "attention_mask": mask})
    # mean of 3 and 5 over the unmasked tokens (token_type_ids were zeros), then L2-normalised
    assert got == pytest.approx(np.array([[4.0, 4.0]]) / np.sqrt(32), abs=1e-6)


def test_mismatches_name_the_key_to_set():
    img = helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 224, 224])
    out = helper.make_tensor_value_info("probs", TensorProto.FLOAT, [1, 1000])
    i, o = ports(_model([helper.make_node("Identity", ["image"], ["probs"])], [img], [out]).graph)
    plan = plan_io(i, o, "classification", ("input",), ("logits",))
    assert plan.changes() == ["input image -> input", "output probs -> logits"]
    # a pretrained classifier scores more classes than the data holds: fine
    check_fit(plan, i, o, "classification", DataShape((3, 224, 224), 1000, max_label=998))
    check_fit(plan, i, o, "classification", DataShape((3, 224, 224), max_label=999))
    with pytest.raises(IOMismatch) as e:
        check_fit(plan, i, o, "classification", DataShape((3, 224, 224), max_label=1000))
    assert str(e.value) == ("teacher.onnx: output 'probs' gives 1000 classes (ids 0-999); the "
                            "data has label 1000: relabel the data with the teacher's class ids, "
                            "or set teacher.outputs: {logits: <the output that scores every "
                            "class>}")
    with pytest.raises(IOMismatch) as e:
        check_fit(plan, i, o, "classification", DataShape((3, 224, 224), 10, max_label=9))
    assert str(e.value) == ("data.num_classes: 10 classes, but the teacher's output 'probs' gives "
                            "1000 (the student scores the teacher's classes): set "
                            "data.num_classes: 1000")
    with pytest.raises(IOMismatch) as e:
        check_fit(plan, i, o, "classification", DataShape((1, 224, 224), 1000, True))
    assert str(e.value) == ("data.channels: the teacher's input 'image' is [1, 3, 224, 224] "
                            "(3 channels); set data.channels: 3")
    with pytest.raises(IOMismatch) as e:
        plan_io(i, o, "classification", ("input",), ("logits",), given_out={"logits": "scores"})
    assert str(e.value) == "teacher.outputs.logits: the model has no output 'scores' (its outputs: probs)"


def test_the_users_names_are_stamped_and_given_back(tmp_path):
    from compress.export.shipped_names import UserNames, user_names, with_user_names

    img = helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3])
    out = helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, 3])
    # an inner value already called "input" is moved aside, not merged with the renamed input
    m = _model([helper.make_node("Relu", ["image"], ["input"]),
                helper.make_node("Neg", ["input"], ["scores"])], [img], [out])
    i, o = ports(m.graph)
    plan = plan_io(i, o, "classification", ("input",), ("logits",))
    apply_plan_(m, plan, ("logits",))
    onnx.save(m, tmp_path / "teacher.onnx")
    names = user_names(tmp_path / "teacher.onnx")
    assert names == UserNames({"input": "image"}, {"logits": "scores"})
    assert [v.name for v in m.graph.input] == ["input"] and [v.name for v in m.graph.output] == ["logits"]
    shipped = with_user_names(tmp_path / "teacher.onnx", tmp_path / "shipped.onnx", names)
    sess = make_session(str(shipped), 1, "disable")
    assert [x.name for x in sess.get_inputs()] == ["image"]
    (got,) = sess.run(["scores"], {"image": np.array([[-1.0, 2.0, 0.5]], np.float32)})
    assert got.tolist() == [[0.0, -2.0, -0.5]]
    again = with_user_names(shipped, tmp_path / "again.onnx", names)  # nothing left to rename
    assert [v.name for v in onnx.load(again).graph.input] == ["image"]


def test_validate_takes_a_wider_classifier_and_refuses_a_count_it_does_not_share(tmp_path):
    """``compress validate`` on digits (labels 0-9) with a 1000-class ONNX teacher: valid; with
    ``data.num_classes: 10`` stated, exit 2 naming the file, line and the key's value to set."""
    import yaml
    from click.testing import CliRunner

    from compress.cli import cli

    x = helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 1, 32, 32])
    y = helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, 1000])
    w = helper.make_tensor("w", TensorProto.FLOAT, [1024, 1000], np.zeros(1024 * 1000, np.float32))
    m = _model([helper.make_node("Flatten", ["image"], ["flat"]),
                helper.make_node("MatMul", ["flat", "w"], ["scores"])], [x], [y], [w])
    onnx.save(m, tmp_path / "wide.onnx")

    def validate(data):
        cfg = {"version": 1, "name": "wide", "data": data, "teacher": {"onnx": str(tmp_path / "wide.onnx")},
               "stages": [{"package": {}}]}
        (tmp_path / "p.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
        return CliRunner().invoke(cli, ["validate", str(tmp_path / "p.yaml")])

    res = validate({"source": "digits", "image_size": 32})
    assert res.exit_code == 0, res.output
    res = validate({"source": "digits", "image_size": 32, "num_classes": 10})
    assert res.exit_code == 2
    assert res.stderr.strip() == (
        f"error: {tmp_path / 'p.yaml'}:6 data.num_classes: 10 classes, but the teacher's output "
        "'scores' gives 1000 (the student scores the teacher's classes): set data.num_classes: 1000")


def test_hints_need_a_torch_teacher(tmp_path):
    import yaml
    from click.testing import CliRunner

    from compress.cli import cli

    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 1, 32, 32])
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 1024])
    onnx.save(_model([helper.make_node("Flatten", ["input"], ["logits"])], [x], [y]), tmp_path / "t.onnx")
    cfg = {"version": 1, "name": "hints", "teacher": {"onnx": str(tmp_path / "t.onnx")},
           "student": {"arch": "resnet"},
           "stages": [{"distill": {"hints": [{"student": "stem", "teacher": "stem"}]}}]}
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    res = CliRunner().invoke(cli, ["validate", str(tmp_path / "p.yaml")])
    assert res.exit_code == 2
    assert res.stderr.strip() == (
        f"error: {tmp_path / 'p.yaml'}:9 stages[0].distill.hints: hints tap the teacher's inner "
        "modules; an ONNX teacher has none (give a torch teacher: arch or python with a checkpoint)")
