"""A task of another shape than classification, for the seam test: two named inputs in, a
vector out, quality as the cosine to the target vector. Test code only (named in a monkeypatched
registry entry); the shipped registry stays closed."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from compress.config.train import SoftTargets
from compress.tasks.base import Task


class VectorTask(Task):
    name = "vector"
    metric = "cosine"
    higher_is_better = True

    def __init__(self):
        self.input_names, self.output_names = ("a", "b"), ("vector",)

    def loss(self, out, target):
        return F.mse_loss(out.float(), target.float())

    def distill_loss(self, out, teacher_out, target, kd: SoftTargets):
        return F.mse_loss(out.float(), teacher_out.float())

    def quality(self, out, target, reference=None):
        def cos(x, y):
            x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
            return (x * y).sum(1) / (np.linalg.norm(x, axis=1) * np.linalg.norm(y, axis=1) + 1e-12)

        q = {"cosine": float(cos(out, target).mean()), "mse": float(((out - target) ** 2).mean())}
        if reference is not None:
            q["cosine_to_teacher"] = float(cos(out, reference).mean())
        return q


class Pairs(Dataset):
    """y = W1 a + tanh(W2 b): a real function of both inputs."""

    def __init__(self, n: int, seed: int):
        g = torch.Generator().manual_seed(seed)
        w = torch.Generator().manual_seed(99)  # the same function for every split
        self.a, self.b = torch.randn(n, 6, generator=g), torch.randn(n, 4, generator=g)
        w1, w2 = torch.randn(6, 3, generator=w), torch.randn(4, 3, generator=w)
        self.y = self.a @ w1 + torch.tanh(self.b @ w2)

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return {"a": self.a[i], "b": self.b[i]}, self.y[i]


def splits():
    return {"train": Pairs(512, 0), "val": Pairs(128, 1), "test": Pairs(128, 2)}


class TwoInputs(nn.Module):
    def __init__(self, hidden: int = 32):
        super().__init__()
        self.fa, self.fb = nn.Linear(6, hidden), nn.Linear(4, hidden)
        self.out = nn.Linear(hidden, 3)

    def forward(self, a, b):
        return self.out(torch.relu(self.fa(a) + self.fb(b)))


def build(hidden: int = 32) -> nn.Module:
    torch.manual_seed(0)
    return TwoInputs(hidden)
