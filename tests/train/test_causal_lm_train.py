"""The causal-lm student's training parts on a tiny random Llama: which blocks it keeps (given,
or by angular distance), the teacher's top-k cached on disk, the kept epoch, and the task's
perplexity and agreement against a hand computation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from compress.data.lm_text import TokenWindows
from compress.errors import InputError
from compress.train.causal_lm import LMPlan, cached_topk, choose_layers, distill_lm_, perplexity
from tests._tiny_llama import tiny_llama


@pytest.fixture(scope="module")
def windows() -> TokenWindows:
    g = torch.Generator().manual_seed(0)
    return TokenWindows(torch.randint(3, 97, (16 * 12,), generator=g), 16)


def test_windows_cut_one_stream_and_drop_the_partial_one():
    ds = TokenWindows(torch.arange(50), 16)
    assert len(ds) == 3
    inputs, target = ds[2]
    assert inputs["input_ids"].tolist() == list(range(32, 48)) and target.tolist() == list(range(32, 48))
    with pytest.raises(IndexError):
        ds[3]


def test_keep_drops_the_blocks_of_least_angular_distance(windows):
    from compress.models.layer_depth import angular_distances

    model = tiny_llama(layers=4)
    choice = choose_layers(model, windows, keep=2, calibration=4)
    ids = torch.stack([windows[i][1] for i in range(4)])
    d = angular_distances(model, ids)
    assert choice.distances == pytest.approx(d)
    assert choice.kept == sorted(sorted(range(4), key=lambda i: -d[i])[:2])
    assert choose_layers(model, windows, layers=[3, 1]).kept == [1, 3]


def test_layers_and_keep_out_of_range_are_one_line(windows):
    model = tiny_llama(layers=3)
    with pytest.raises(InputError) as e:
        choose_layers(model, windows, layers=[0, 3])
    assert str(e.value) == "student.layers: layer 3 is out of range (the teacher has 3 layers, 0-2)"
    with pytest.raises(InputError) as e:
        choose_layers(model, windows, keep=4)
    assert str(e.value) == "student.keep: 4 is out of range (the teacher has 3 layers: keep 1-3)"


def test_the_teachers_top_k_is_computed_once_then_read_from_disk(windows, tmp_path):
    from compress.train.topk_kd import teacher_topk

    model = tiny_llama(layers=2)
    key = {"teacher": "x", "k": 8}
    top, hit = cached_topk(model, windows, 8, 2.0, tmp_path, key, batch_size=5)
    assert not hit and top.indices.shape == (12, 16, 8)
    with torch.no_grad():
        want = teacher_topk(model(input_ids=windows[3][1][None]).logits, 8, 2.0)
    np.testing.assert_array_equal(top.indices[3], want[0][0].numpy())
    np.testing.assert_allclose(top.logprobs[3], want[1][0].numpy(), atol=1e-5)
    again, hit = cached_topk(model, windows, 8, 2.0, tmp_path, key)
    assert hit and np.array_equal(again.logprobs, top.logprobs)
    assert len(list(tmp_path.glob("topk-*.npz"))) == 1


def test_distillation_keeps_the_best_validation_epoch(windows):
    teacher = tiny_llama(layers=3)
    student = tiny_llama(layers=3, seed=1)
    top, _ = cached_topk(teacher, windows, 16, 1.0, None, {})
    before = perplexity(student, windows)
    plan = LMPlan(epochs=0, lr=1e-3, weight_decay=0.0, optimizer="adamw", schedule="constant",
                  grad_clip=1.0, batch_size=4, temperature=1.0, alpha=1.0)
    fit = distill_lm_(student, top, windows, windows, plan)
    assert (fit.best_epoch, fit.history) == (0, []) and fit.best_val == pytest.approx(before)
    fit = distill_lm_(student, top, windows, windows,
                      LMPlan(**{**plan.__dict__, "epochs": 3, "lr": 3e-3}))
    vals = [before] + [h["val_perplexity"] for h in fit.history]
    assert fit.best_val == pytest.approx(min(vals), rel=1e-4)
    assert perplexity(student, windows) == pytest.approx(fit.best_val, rel=1e-6)
    assert fit.history[-1]["loss"] < fit.history[0]["loss"]


def test_the_task_measures_perplexity_and_agreement_by_hand():
    from compress.tasks.causal_lm import CausalLMTask

    logits = np.log(np.array([[[0.5, 0.25, 0.25], [0.2, 0.6, 0.2], [1 / 3, 1 / 3, 1 / 3]]]))
    ids = np.array([[0, 1, 2]])
    ref = np.log(np.array([[[0.1, 0.8, 0.1], [0.1, 0.8, 0.1], [0.8, 0.1, 0.1]]]))
    q = CausalLMTask().quality(logits, ids, ref)
    # position 0 predicts id 1 (p 0.25), position 1 predicts id 2 (p 0.2)
    assert q["perplexity"] == pytest.approx(math.exp(-(math.log(0.25) + math.log(0.2)) / 2))
    assert q["top1_agreement"] == pytest.approx(2 / 3)  # argmax 0, 1, 0 vs 1, 1, 0: two of three
