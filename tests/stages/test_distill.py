"""Distillation on real digits: soft targets alone teach a student; hints train alongside."""

from __future__ import annotations

import pytest
import torch
from _util import TASK

from compress.config.stages import DistillConfig, Hint
from compress.data.sources import DataConfig, load_data
from compress.models.cnn import ResNet
from compress.stages.distill import distill
from compress.train.loop import FitData, FitPlan, TrainConfig, evaluate_headline, fit_

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def setup():
    data = load_data(DataConfig(image_size=8, batch_size=32), seed=0)
    torch.manual_seed(0)
    teacher = ResNet(1, 10, width=16, depth=(1, 1))
    fit_(teacher, TASK, FitData(data.train, data.val, 32),
         FitPlan(TrainConfig(epochs=4, lr=0.01), CPU, progress=False))
    return data, teacher


def test_teacher_soft_targets_alone_teach_the_student(setup):
    data, teacher = setup
    teacher_acc = evaluate_headline(TASK, teacher, data.val)
    torch.manual_seed(1)
    student = ResNet(1, 10, width=4, depth=(1, 1))
    cfg = DistillConfig(epochs=4, lr=0.02, use_labels=False)  # labels unused: KD only
    result = distill(student, teacher, TASK, data, cfg, CPU, progress=False)
    assert teacher_acc > 0.9
    assert result.best_val > 0.8
    with torch.no_grad():
        x = data.test.inputs["input"]  # held out: chose nothing
        agree = (student(x).argmax(1) == teacher(x).argmax(1)).float().mean().item()
    assert agree > 0.8


def test_hints_train_their_regressor_and_student(setup):
    data, teacher = setup
    torch.manual_seed(2)
    student = ResNet(1, 10, width=4, depth=(1, 1))
    before = student.stages[0][0].conv1.weight.clone()
    cfg = DistillConfig(epochs=1, lr=0.01, hints=[Hint(student="stages.0", teacher="stages.0")], hint_weight=0.5)
    result = distill(student, teacher, TASK, data, cfg, CPU, progress=False)
    assert not torch.equal(before, student.stages[0][0].conv1.weight)
    assert result.history[0]["loss"] > 0 and result.best_val > 0.3
