"""The teacher's outputs computed once, kept on disk, reused by later epochs and runs; top-k keeps
the KD loss close; a changed key recomputes; augmentation runs the teacher live."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from compress.config.data import DataConfig
from compress.data.sources import load_data
from compress.tasks.classification import ClassificationTask, kd_loss
from compress.train.checkpoint import TrainingScope
from compress.train.loop import KD, FitData, FitPlan, TrainConfig, fit_
from compress.train.teacher_cache import expand_topk

TASK = ClassificationTask()


class Counting(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return self.net(x)


@pytest.fixture(scope="module")
def data():
    return load_data(DataConfig(source="digits", image_size=8, batch_size=64), seed=0)


def _fit(data, teacher, cache_dir, sha="t1", epochs=2, **cfg):
    torch.manual_seed(0)
    student = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    fit_(student, TASK, FitData(data.train, data.val, 64),
         FitPlan(TrainConfig(epochs=epochs, lr=0.01, **cfg), torch.device("cpu"), progress=False),
         KD(teacher), TrainingScope(cache_dir=cache_dir, teacher=teacher, teacher_sha256=sha, data_key="d1"))
    return student


def test_second_run_does_not_call_the_teacher(data, tmp_path):
    teacher = Counting()
    _fit(data, teacher, tmp_path)
    first = teacher.calls
    assert first == -(-len(data.train) // 256)  # one pass at batch 256, then none for 2 epochs
    _fit(data, teacher, tmp_path, epochs=3)
    assert teacher.calls == first
    assert len(list(tmp_path.iterdir())) == 1
    _fit(data, teacher, tmp_path, sha="t2")  # another teacher: recomputed in a new folder
    assert teacher.calls == 2 * first and len(list(tmp_path.iterdir())) == 2
    _fit(data, teacher, tmp_path, teacher_cache="off")  # live: every training batch
    assert teacher.calls == 2 * first + 2 * -(-len(data.train) // 64)


def test_augmentation_runs_the_teacher_live_unless_forced(data, tmp_path):
    teacher = Counting()
    data.augment_shift = 1
    torch.manual_seed(0)
    fit_(nn.Sequential(nn.Flatten(), nn.Linear(64, 10)), TASK, FitData(data.train, data.val, 64, 1),
         FitPlan(TrainConfig(epochs=1, lr=0.01), torch.device("cpu"), progress=False), KD(teacher),
         TrainingScope(cache_dir=tmp_path, teacher=teacher, teacher_sha256="t", data_key="d"))
    data.augment_shift = 0
    assert teacher.calls == -(-len(data.train) // 64) and not list(tmp_path.iterdir())


def test_topk_reconstructs_the_kd_loss(data, tmp_path):
    teacher = Counting()
    _fit(data, teacher, tmp_path, teacher_topk=5, epochs=1)
    folder = next(tmp_path.iterdir())
    v, i, r = (np.load(folder / f"{n}.npy") for n in ("values", "indices", "rest"))
    assert v.shape == (len(data.train), 5)
    x = torch.stack([data.train[j][0]["input"] for j in range(len(data.train))])
    y = torch.tensor([int(data.train[j][1]) for j in range(len(data.train))])
    with torch.no_grad():
        full = teacher(x)
    approx = expand_topk(torch.from_numpy(v), torch.from_numpy(i).long(), torch.from_numpy(r), 10)
    assert torch.equal(approx.topk(5, 1).indices.sort(1).values, full.topk(5, 1).indices.sort(1).values)
    torch.manual_seed(0)
    student = torch.randn(len(y), 10)
    exact = float(kd_loss(student, full, y, 4.0, 0.7))
    got = float(kd_loss(student, approx, y, 4.0, 0.7))
    # top-5 of 10 classes at T=4: the 5 logits left out share their mean; the soft targets move a
    # little, the loss by well under 5% (measured ~1%)
    assert abs(got - exact) / exact < 0.05, (got, exact)
    k10 = expand_topk(*full.topk(10, 1), torch.zeros(len(y)), 10)
    assert torch.equal(k10, full)


class CountingEmbedder(nn.Module):
    """Token ids and a mask in, a normalised mean-pooled vector out (the embedding task's shape)."""

    def __init__(self, dim: int = 8):
        super().__init__()
        torch.manual_seed(2)
        self.emb = nn.Embedding(50, dim)
        self.calls = 0

    def forward(self, input_ids, attention_mask):
        self.calls += 1
        h = self.emb(input_ids) * attention_mask[..., None]
        return nn.functional.normalize(h.sum(1) / attention_mask.sum(1, keepdim=True), dim=-1)


def test_embedding_task_reads_its_teacher_from_the_cache(tmp_path):
    """Sequence batches are collated by the task (padded per batch); the cache row index must
    still reach the teacher lookup, or every batch runs the teacher live."""
    from compress.tasks.embedding import EmbeddingTask

    g = torch.Generator().manual_seed(0)
    items = [({"input_ids": torch.randint(1, 50, (int(n),), generator=g),
               "attention_mask": torch.ones(int(n), dtype=torch.long)}, 0)
             for n in torch.randint(3, 12, (96,), generator=g)]
    teacher = CountingEmbedder()
    torch.manual_seed(0)
    student = CountingEmbedder()
    fit_(student, EmbeddingTask(), FitData(items[:64], items[64:], 16),
         FitPlan(TrainConfig(epochs=3, lr=0.01), torch.device("cpu"), progress=False), KD(teacher),
         TrainingScope(cache_dir=tmp_path, teacher=teacher, teacher_sha256="e1", data_key="d1"))
    # one pass to fill the cache (batch 256: one call), one for the validation reference; none
    # in the 3 training epochs of 4 batches each
    assert teacher.calls == 2


def test_sequence_outputs_are_computed_longest_first_and_land_at_their_rows(tmp_path):
    import contextlib

    from compress.tasks.embedding import EmbeddingTask
    from compress.train.teacher_cache import build_disk_cache

    g = torch.Generator().manual_seed(0)
    lens = torch.randint(2, 40, (50,), generator=g).tolist()
    items = [({"input_ids": torch.randint(1, 50, (n,), generator=g),
               "attention_mask": torch.ones(n, dtype=torch.long)}, 0) for n in lens]
    teacher, widths = CountingEmbedder(), []
    teacher.register_forward_pre_hook(lambda m, args: widths.append(tuple(args[0].shape)))
    cache = build_disk_cache(tmp_path, "k", EmbeddingTask(), teacher, items, torch.device("cpu"),
                             None, contextlib.nullcontext, batch_size=8)
    # batches of 8 sorted by length: each pads to its own longest, 7 batches (the last of 2)
    assert [w[0] for w in widths] == [8] * 6 + [2]
    assert [w[1] for w in widths] == [sorted(lens, reverse=True)[8 * b] for b in range(7)]
    got = cache.get(torch.arange(len(items)))
    with torch.no_grad():
        alone = torch.cat([teacher(x["input_ids"][None], x["attention_mask"][None]) for x, _ in items])
    assert float((got - alone).abs().max()) < 1e-6  # row i is item i, whatever batch it rode in
