"""A teacher brought as ONNX, as the training loop sees it: a frozen module whose forward runs
the teacher's graph in ONNX Runtime (CPU). Distillation needs only the teacher's outputs, so a
pretrained classifier exported by someone else distills a student as a torch teacher would; its
outputs are cached per sample like any frozen teacher's. Hints (inner layers) need a torch
teacher. The graph takes the task's input names (the teacher stage renamed them).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn


class OnnxTeacher(nn.Module):
    """``forward(*inputs)`` -> the graph's first output, on the inputs' device; no gradient."""

    def __init__(self, path: Path, threads: int | None = None):
        super().__init__()
        from compress.common.ort import make_session

        self.path = Path(path)
        self.session = make_session(self.path, threads or max(1, torch.get_num_threads()), "all")
        first = self.session.get_inputs()[0].shape
        self.fixed_batch = first[0] if first and isinstance(first[0], int) else None
        self.names = [i.name for i in self.session.get_inputs()]

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        feeds = {n: x.detach().cpu().numpy() for n, x in zip(self.names, inputs, strict=True)}
        rows = len(inputs[0])
        step = self.fixed_batch if self.fixed_batch and self.fixed_batch != rows else rows
        outs = [self.session.run(None, {n: v[i:i + step] for n, v in feeds.items()})[0]
                for i in range(0, rows, step)]
        return torch.from_numpy(np.concatenate(outs)).to(inputs[0].device)


def teacher_module(teacher) -> nn.Module | None:
    """The teacher artifact (``compress.artifacts.ModelArtifact``, or None) in a form training
    can call: its torch module, or its ONNX graph run in ORT."""
    if teacher is None:
        return None
    if teacher.module is not None:
        return teacher.module
    if teacher.format == "onnx" and teacher.path is not None:
        return OnnxTeacher(teacher.path).eval()
    return None
