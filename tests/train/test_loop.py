"""The shared training loop's pieces: KD loss, hint regressors, augmentation, BN re-estimation."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from compress.tasks.classification import ClassificationTask, kd_loss, random_shift
from compress.train.hints import HintRegressor
from compress.train.loop import KD, recalibrate_bn_

TASK = ClassificationTask()


def _hand_kd(s, t, y, temp, alpha):
    total = 0.0
    for i in range(len(y)):
        ps = [math.exp(v / temp) for v in s[i]]
        pt = [math.exp(v / temp) for v in t[i]]
        zs, zt = sum(ps), sum(pt)
        kl = sum((b / zt) * (math.log(b / zt) - math.log(a / zs)) for a, b in zip(ps, pt, strict=False))
        soft = kl * temp * temp
        if y[i] >= 0:
            ce = -math.log(math.exp(s[i][y[i]]) / sum(math.exp(v) for v in s[i]))
            total += alpha * soft + (1 - alpha) * ce
        else:
            total += soft
    return total / len(y)


@pytest.mark.parametrize("temp,alpha", [(1.0, 0.5), (4.0, 0.7), (2.0, 0.0), (8.0, 1.0)])
def test_kd_loss_matches_hand_computation(temp, alpha):
    s = [[1.0, 2.0, 0.5], [0.1, -1.0, 3.0], [2.0, 2.0, -2.0]]
    t = [[0.5, 3.0, 0.0], [1.0, 0.0, 2.0], [-1.0, 4.0, 0.0]]
    y = [1, 2, -1]  # the last sample is unlabeled: soft loss at full weight
    got = kd_loss(torch.tensor(s), torch.tensor(t), torch.tensor(y), temp, alpha).item()
    assert got == pytest.approx(_hand_kd(s, t, y, temp, alpha), rel=1e-5)


def test_kd_loss_is_zero_when_student_equals_teacher_and_unlabeled():
    logits = torch.randn(4, 10)
    loss = kd_loss(logits, logits.clone(), torch.full((4,), -1), 4.0, 0.7)
    assert abs(loss.item()) < 1e-6


def test_hint_regressors_are_sized_from_observed_shapes():
    conv = HintRegressor(torch.Size([2, 8, 16, 16]), torch.Size([2, 32, 8, 8]))
    assert (conv.proj.in_channels, conv.proj.out_channels, conv.proj.kernel_size) == (8, 32, (1, 1))
    assert conv(torch.randn(2, 8, 16, 16)).shape == (2, 32, 8, 8)
    lin = HintRegressor(torch.Size([2, 20]), torch.Size([2, 64]))
    assert (lin.proj.in_features, lin.proj.out_features) == (20, 64)
    with pytest.raises(ValueError, match="differ in rank"):
        HintRegressor(torch.Size([2, 20]), torch.Size([2, 8, 4, 4]))


def test_fit_sizes_hints_between_real_models():
    from compress.models.cnn import ResNet
    from compress.train.hints import size_hint_regressors
    from compress.train.teacher_cache import Taps as _Taps

    student, teacher = ResNet(width=4, depth=(1, 1)), ResNet(width=16, depth=(1, 1))
    hints = [("stages.0", "stages.0"), ("stages.1", "stages.1")]
    data = [({"input": torch.randn(1, 16, 16)}, torch.tensor(0)) for _ in range(2)]
    s_taps, t_taps = _Taps(student, [a for a, _ in hints]), _Taps(teacher, [b for _, b in hints])
    regs = size_hint_regressors(TASK, student, teacher, hints, data, "cpu", s_taps, t_taps)
    assert [(r.proj.in_channels, r.proj.out_channels) for r in regs] == [(4, 16), (8, 32)]


def test_random_shift_moves_content_by_at_most_the_limit():
    torch.manual_seed(0)
    x = torch.zeros(64, 1, 12, 12)
    x[:, :, 6, 6] = 1.0
    out = random_shift(x, 2)
    pos = out[:, 0].flatten(1).argmax(1)
    rows, cols = pos // 12, pos % 12
    assert int((rows - 6).abs().max()) <= 2 and int((cols - 6).abs().max()) <= 2
    assert len(set(zip(rows.tolist(), cols.tolist(), strict=False))) > 10  # really random
    assert torch.equal(random_shift(x, 0), x)


def test_recalibrate_bn_restores_true_statistics():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4))
    data = [({"input": torch.randn(1, 8, 8) * 3 + 5}, torch.tensor(0)) for _ in range(256)]
    recalibrate_bn_(model, TASK, data, batches=100, batch_size=64)
    with torch.no_grad():
        feats = model[0](torch.stack([x["input"] for x, _ in data]))
    bn = model[1]
    assert torch.allclose(bn.running_mean, feats.mean((0, 2, 3)), atol=1e-4)
    assert torch.allclose(bn.running_var, feats.var((0, 2, 3)), rtol=0.02)
    assert not model.training


def test_teacher_logits_are_cached_exactly_when_inputs_repeat():
    from compress.data.sources import NamedDataset
    from compress.train.loop import FitData, FitPlan, TrainConfig, fit_

    calls = []

    class Counting(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(4, 3)

        def forward(self, x):
            calls.append(len(x))
            return self.lin(x.flatten(1))

    torch.manual_seed(0)
    data = NamedDataset({"input": torch.randn(40, 1, 2, 2)}, torch.randint(0, 3, (40,)))
    teacher, cpu = Counting(), torch.device("cpu")
    plan = FitPlan(TrainConfig(epochs=3), cpu, progress=False)
    fit_(nn.Sequential(nn.Flatten(), nn.Linear(4, 3)), TASK, FitData(data, data, 16), plan, KD(teacher))
    assert sum(calls) == 40  # each sample went through the teacher once, not once per epoch
    calls.clear()
    # augmented inputs differ every epoch: no cache
    fit_(nn.Sequential(nn.Flatten(), nn.Linear(4, 3)), TASK, FitData(data, data, 16, augment_shift=1),
         plan, KD(teacher))
    assert sum(calls) == 120
