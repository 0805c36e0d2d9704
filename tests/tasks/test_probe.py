"""The linear probe: a logistic regression on frozen embeddings, checked against values worked
out by hand, and run through ONNX Runtime on a tiny graph whose embedding is known."""

from __future__ import annotations

import numpy as np
import pytest

from compress.errors import InputError
from compress.tasks.probe import ProbeSet, probe_accuracy, probe_models, retention


def test_probe_accuracy_matches_the_hand_computed_value():
    # symmetric fit data: the regression's boundary is x = 0, so it predicts the sign of x;
    # the score part has one sample (-0.5, label 1) on the wrong side: 3 of 4 right
    fit_x, fit_y = np.array([[-2.0], [-1.0], [1.0], [2.0]]), [0, 0, 1, 1]
    score_x, score_y = np.array([[-3.0], [-0.5], [0.5], [3.0]]), [0, 1, 1, 1]
    assert probe_accuracy(fit_x, fit_y, score_x, score_y) == 0.75
    assert retention(0.75, 0.8) == pytest.approx(93.75)


def test_a_fit_part_with_one_class_is_refused():
    with pytest.raises(InputError, match="the fit part has one class only"):
        probe_accuracy(np.zeros((3, 2)), [1, 1, 1], np.zeros((1, 2)), [0])


def _mean_id_model(path, scale: float):
    """``input_ids`` [B, L] -> their mean times ``scale``, as a [B, 1] 'embedding'."""
    import onnx
    from onnx import TensorProto, helper

    nodes = [helper.make_node("Cast", ["input_ids"], ["f"], to=TensorProto.FLOAT),
             helper.make_node("ReduceMean", ["f"], ["m"], keepdims=1, axes=[1]),
             helper.make_node("Mul", ["m", "k"], ["sentence_embedding"])]
    graph = helper.make_graph(
        nodes, "mean_id",
        [helper.make_tensor_value_info(n, TensorProto.INT64, ["b", "l"])
         for n in ("input_ids", "attention_mask")],
        [helper.make_tensor_value_info("sentence_embedding", TensorProto.FLOAT, ["b", 1])],
        [helper.make_tensor("k", TensorProto.FLOAT, [], [scale])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    return path


def _items(ids_rows):
    import torch

    return [({"input_ids": torch.tensor(r), "attention_mask": torch.ones(len(r), dtype=torch.long)}, 0)
            for r in ids_rows]


def test_probe_models_scores_each_onnx_model_and_the_retention(tmp_path):
    from compress.tasks.embedding import EmbeddingTask

    # mean ids: fit 10, 20 (class 0) and 80, 90 (class 1); score 15 (0), 85 (1), 45 (1), 70 (1)
    fit = _items([[10, 10], [20, 20, 20], [80], [90, 90]])
    score = _items([[15], [85, 85], [45, 45, 45], [70]])
    probe = ProbeSet("toy", fit, [0, 0, 1, 1], score, [0, 1, 1, 1])
    teacher = _mean_id_model(tmp_path / "t.onnx", 1.0)
    # a 'student' whose embedding is zero for every sentence: the fitted regression has no
    # feature to use and (balanced fit part) a zero decision value, which predicts class 0
    student = _mean_id_model(tmp_path / "s.onnx", 0.0)
    task = EmbeddingTask()
    got = probe_models(task, [teacher, student], probe, "basic", reference=0)
    # the teacher's boundary sits at 50: 45 falls on the class-0 side, 3 of 4 right
    assert got[0] == {"probe_accuracy": 0.75, "probe_retention": 100.0}
    assert got[1]["probe_accuracy"] == 0.25
    assert got[1]["probe_retention"] == pytest.approx(100 * 0.25 / 0.75)
