"""PyTorch vs ONNX Runtime on the same inputs, judged one way for every task: the max abs
difference against ``atol`` always, plus what the task compares (``Task.uses.parity``: top-1
agreement for classifiers, the least row cosine for embedders). The export stage and the teacher
stage both reach it through ``compress.export.checked``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from compress.config.stages import ParityLimits
from compress.config.tasks import ParityCheck

if TYPE_CHECKING:
    import numpy as np
    from torch import nn
    from torch.utils.data import Dataset

    from compress.tasks.base import Task


@dataclass(frozen=True)
class Parity:
    """The measured values (a check the task does not compare stays None) and the verdict."""

    samples: int
    max_abs_diff: float
    top1_agreement: float | None
    cosine_min: float | None
    failed: tuple[str, ...]  # the measured values that missed their limit
    message: str  # every measured value beside its limit

    @property
    def ok(self) -> bool:
        return not self.failed

    def metrics(self) -> dict[str, float | int | str]:
        """The measured values under the stage metrics' keys (the report reads these)."""
        values = {"max_abs_diff": self.max_abs_diff, "top1_agreement": self.top1_agreement,
                  "cosine_min": self.cosine_min}
        return {**{k: v for k, v in values.items() if v is not None},
                "parity_samples": self.samples, "parity_split": "test"}


def compare(ref: np.ndarray, got: np.ndarray, checks: tuple[ParityCheck, ...],
            limits: ParityLimits) -> Parity:
    """Judge ONNX Runtime outputs ``got`` against PyTorch outputs ``ref`` (rows are samples)."""
    import numpy as np

    ref, got = np.asarray(ref), np.asarray(got)
    empty = ref.size == 0
    diff = 0.0 if empty else float(np.abs(ref - got).max())
    parts = [(f"max abs diff {diff:.3g} (atol {limits.atol:g})", diff > limits.atol, "max_abs_diff")]
    agree = cos = None
    if "top1_agreement" in checks:
        agree = 1.0 if empty else float((ref.argmax(-1) == got.argmax(-1)).mean())
        parts.append((f"top-1 agreement {agree:.4f} (min {limits.min_agreement:g})",
                      agree < limits.min_agreement, "top1_agreement"))
    if "cosine_min" in checks:
        cos = 1.0 if empty else float((_unit(ref) * _unit(got)).sum(-1).min())
        parts.append((f"min cosine {cos:.6f} (min {limits.min_cosine:g})",
                      cos < limits.min_cosine, "cosine_min"))
    failed = tuple(name for _, missed, name in parts if missed)
    return Parity(len(ref), diff, agree, cos, failed, ", ".join(text for text, _, _ in parts))


def _unit(x: np.ndarray) -> np.ndarray:
    import numpy as np

    x = np.asarray(x, np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def outputs(model: nn.Module, path: str | Path,
            feeds: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """The first output of PyTorch and of ONNX Runtime (level basic: the graph as exported) on
    the same named inputs, in batches the ONNX model's batch axis allows."""
    import torch

    from compress.common.ort import make_session, run_batched

    got = run_batched(make_session(path, threads=1, opt_level="basic"), feeds, 64)[0]
    model = model.eval().cpu()
    with torch.no_grad():
        outs = [model(*[torch.from_numpy(v[i : i + 64]) for v in feeds.values()])
                for i in range(0, len(got), 64)]
    ref = torch.cat([o[0] if isinstance(o, tuple | list) else o for o in outs]).float().numpy()
    return ref, got


def check_parity(task: Task, model: nn.Module, path: str | Path, ds: Dataset, samples: int,
                 limits: ParityLimits) -> Parity:
    """PyTorch vs ONNX Runtime on the first ``samples`` items of ``ds``, judged as ``task``
    says (its inputs shaped as the ONNX file takes them)."""
    from torch.utils.data import Subset

    from compress.common.ort import make_session
    from compress.tasks.base import ort_arrays

    subset = Subset(ds, range(min(samples, len(ds))))
    feeds, _ = ort_arrays(task, subset, make_session(path, 1, "basic"))
    ref, got = outputs(model, path, feeds)
    return compare(ref, got, task.uses.parity, limits)
