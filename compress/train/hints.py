"""FitNets hints: regressors that map a student feature to its teacher feature's shape, sized
from the shapes observed on one real batch."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from compress.tasks.base import Task


class HintRegressor(nn.Module):
    """Maps a student feature to the teacher feature's shape: 1x1 conv (+resize) or linear."""

    def __init__(self, student_shape: torch.Size, teacher_shape: torch.Size):
        super().__init__()
        self.size = tuple(teacher_shape[2:]) if len(teacher_shape) == 4 else None
        if len(student_shape) == 4 and len(teacher_shape) == 4:
            self.proj: nn.Module = nn.Conv2d(student_shape[1], teacher_shape[1], 1, bias=False)
        elif len(student_shape) == 2 and len(teacher_shape) == 2:
            self.proj = nn.Linear(student_shape[1], teacher_shape[1], bias=False)
        else:
            raise ValueError(
                f"hint shapes differ in rank: student {list(student_shape)}, teacher {list(teacher_shape)}"
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(x)
        if self.size is not None and tuple(x.shape[2:]) != self.size:
            x = F.interpolate(x, size=self.size, mode="bilinear", align_corners=False)
        return x


def size_hint_regressors(task: Task, model, teacher, hints, train, device, s_taps, t_taps) -> nn.ModuleList:
    """One regressor per hint pair, sized from the shapes observed on one real batch."""
    inputs, _ = task.collate([train[i][:2] for i in range(min(2, len(train)))])
    inputs = {k: v.to(device) for k, v in inputs.items()}
    was = model.training
    model.eval()
    with torch.no_grad():
        task.forward(model, inputs)
        task.forward(teacher, inputs)
    model.train(was)
    regs = [HintRegressor(s_taps.out[s].shape, t_taps.out[t].shape) for s, t in hints]
    return nn.ModuleList(regs).to(device)
