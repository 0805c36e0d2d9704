"""The classification task's quality numbers, by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from compress.tasks.base import UNLABELED
from compress.tasks.classification import ClassificationTask


def test_accuracy_agreement_and_nll_by_hand():
    logits = np.array([[2.0, 0.0], [0.0, 0.0], [0.0, 5.0], [9.0, 0.0]], np.float32)
    target = np.array([0, 1, 0, UNLABELED])  # the unlabeled row counts for agreement only
    q = ClassificationTask().quality(logits, target, reference=np.array([[1, 0], [1, 0], [0, 1], [0, 1]]))
    # argmax picks class 0 for the tie [0, 0]
    assert q["accuracy"] == pytest.approx(1 / 3)
    assert q["top1_agreement"] == pytest.approx(3 / 4)
    nll = (math.log(1 + math.exp(-2)) + math.log(2) + math.log(1 + math.exp(5))) / 3
    assert q["nll"] == pytest.approx(nll, rel=1e-9)
    # large logits stay finite (log-sum-exp shifted by the row's max)
    assert ClassificationTask().quality(np.array([[1000.0, 0.0]]), np.array([1]))["nll"] == pytest.approx(1000.0)
