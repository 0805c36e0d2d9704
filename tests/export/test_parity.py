"""One parity judgement for every task: max abs diff against atol always, and what the task
compares (top-1 agreement for classifiers, the least row cosine for embedders)."""

from __future__ import annotations

import numpy as np
import pytest

from compress.config.stages import ExportConfig, ParityLimits
from compress.export.parity import compare
from compress.tasks.classification import ClassificationTask
from compress.tasks.embedding import EmbeddingTask


def _rows() -> np.ndarray:
    """22 embeddings near two directions (a real cosine structure, noise 0.01)."""
    rng = np.random.default_rng(0)
    centres = np.repeat(np.array([[1.0, 0, 0, 0], [0, 0, 1.0, 0]]), 11, axis=0)
    return centres + 0.01 * rng.standard_normal(centres.shape)


def test_embedding_parity_values_and_message():
    checks = EmbeddingTask().uses.parity
    ref = _rows()
    p = compare(ref, ref + 1e-6, checks, ParityLimits())
    assert p.ok and p.samples == 22 and p.max_abs_diff == pytest.approx(1e-6)
    assert p.top1_agreement is None and p.cosine_min == pytest.approx(1.0)
    got = ref.copy()
    got[3] = ref[14]  # one row swapped for a row of the other cluster
    p = compare(ref, got, checks, ParityLimits(atol=1e-3, min_cosine=0.999))
    assert p.failed == ("max_abs_diff", "cosine_min") and p.cosine_min < 0.01
    assert p.message == (f"max abs diff {p.max_abs_diff:.3g} (atol 0.001), "
                         f"min cosine {p.cosine_min:.6f} (min 0.999)")
    assert p.metrics() == {"max_abs_diff": p.max_abs_diff, "cosine_min": p.cosine_min,
                           "parity_samples": 22, "parity_split": "test"}


def test_classification_parity_judges_agreement():
    checks = ClassificationTask().uses.parity
    ref = np.eye(10, dtype=np.float32)[np.arange(100) % 10] * 5
    got = ref.copy()
    got[:3] = np.roll(got[:3], 1, axis=1)  # 3 of 100 argmaxes move
    p = compare(ref, got, checks, ParityLimits(atol=10.0, min_agreement=0.98))
    assert p.top1_agreement == pytest.approx(0.97) and p.cosine_min is None
    assert p.failed == ("top1_agreement",) and p.max_abs_diff == pytest.approx(5.0)
    assert p.message == "max abs diff 5 (atol 10), top-1 agreement 0.9700 (min 0.98)"
    assert compare(ref, got, checks, ParityLimits(atol=10.0, min_agreement=0.97)).ok
    assert set(p.metrics()) == {"max_abs_diff", "top1_agreement", "parity_samples", "parity_split"}


def test_a_task_without_checks_is_held_to_atol_alone_and_empty_inputs_pass():
    ref = np.zeros((4, 3))
    assert compare(ref, ref + 0.5, (), ParityLimits(atol=0.4)).failed == ("max_abs_diff",)
    empty = compare(np.zeros((0, 3)), np.zeros((0, 3)), ("top1_agreement", "cosine_min"),
                    ParityLimits())
    assert empty.ok and (empty.samples, empty.max_abs_diff) == (0, 0.0)


def test_limits_come_from_the_export_config():
    cfg = ExportConfig(atol=2e-3, min_agreement=0.95, min_cosine=0.99, opset=17)
    assert ParityLimits.of(cfg) == ParityLimits(atol=2e-3, min_agreement=0.95, min_cosine=0.99)
