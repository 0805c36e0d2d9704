"""The top-k KD loss against a hand computation, the rest bucket included."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from compress.errors import InputError
from compress.train.topk_kd import (
    hidden_mse,
    load_topk,
    save_topk,
    teacher_topk,
    topk_kd_loss,
)


def _softmax(z):
    e = [math.exp(v) for v in z]
    return [v / sum(e) for v in e]


def test_loss_matches_hand_computation_with_rest_mass():
    teacher = [2.0, 1.0, 0.5, -1.0, 0.0]
    student = [1.0, 1.5, 0.0, 0.3, -0.5]
    T, k = 2.0, 2
    idx, logp = teacher_topk(torch.tensor([teacher]), k, temperature=T)
    assert idx.tolist() == [[0, 1]] and idx.dtype == torch.int32
    p = _softmax([v / T for v in teacher])
    q = _softmax([v / T for v in student])
    p_rest, q_rest = 1 - p[0] - p[1], 1 - q[0] - q[1]
    assert p_rest > 0.3  # the rest bucket carries real mass in this example
    hand = sum(p[i] * math.log(p[i] / q[i]) for i in (0, 1)) + p_rest * math.log(p_rest / q_rest)
    hand *= T * T
    loss = topk_kd_loss(torch.tensor([student]), idx, logp, temperature=T)
    assert loss.item() == pytest.approx(hand, rel=1e-5)
    # without the rest bucket the number would differ: the bucket is in the loss
    no_rest = T * T * sum(p[i] * math.log(p[i] / q[i]) for i in (0, 1))
    assert abs(loss.item() - no_rest) > 0.01


def test_full_k_is_the_full_kl_and_zero_for_equal_logits():
    torch.manual_seed(0)
    t, s = torch.randn(4, 11), torch.randn(4, 11)
    idx, logp = teacher_topk(t, 11)
    full = torch.nn.functional.kl_div(torch.log_softmax(s, -1), torch.log_softmax(t, -1),
                                      log_target=True, reduction="none").sum(-1).mean()
    assert topk_kd_loss(s, idx, logp).item() == pytest.approx(full.item(), rel=1e-5, abs=1e-6)
    idx, logp = teacher_topk(t, 3, temperature=1.5)
    assert abs(topk_kd_loss(t, idx, logp, temperature=1.5).item()) < 1e-6


def test_mask_averages_only_kept_tokens_and_gradients_flow():
    torch.manual_seed(1)
    t = torch.randn(1, 3, 7)
    s = torch.randn(1, 3, 7, requires_grad=True)
    idx, logp = teacher_topk(t, 2)
    per_token = [topk_kd_loss(s[:, j], idx[:, j], logp[:, j]).item() for j in range(3)]
    loss = topk_kd_loss(s, idx, logp, mask=torch.tensor([[1, 0, 1]]))
    assert loss.item() == pytest.approx((per_token[0] + per_token[2]) / 2, rel=1e-5)
    loss.backward()
    assert s.grad[0, 1].abs().sum().item() == 0 and s.grad[0, 0].abs().sum().item() > 0


def test_hidden_mse_pairs_layers():
    a = [torch.zeros(1, 2, 4), torch.ones(1, 2, 4)]
    b = [torch.ones(1, 2, 4), torch.full((1, 2, 4), 3.0), torch.zeros(1, 2, 4)]
    # pair (0, 0): error 1; pair (1, 1): error 4 -> mean 2.5
    assert hidden_mse(a, b, [(0, 0), (1, 1)]).item() == pytest.approx(2.5)
    assert hidden_mse(a, b, [(0, 2)]).item() == 0.0


def test_cache_round_trip_and_bad_file(tmp_path):
    idx, logp = teacher_topk(torch.randn(2, 5, 40), 32, temperature=2.0)
    path = save_topk(tmp_path / "topk.npz", idx, logp, 2.0)
    top = load_topk(path)
    assert top.indices.dtype == np.int32 and top.logprobs.dtype == np.float32
    assert top.indices.shape == (2, 5, 32) and top.temperature == 2.0
    np.testing.assert_array_equal(top.indices, idx.numpy())
    (tmp_path / "bad.npz").write_text("not a cache")
    with pytest.raises(InputError, match=r"bad.npz: not a top-k teacher cache"):
        load_topk(tmp_path / "bad.npz")
