"""Export a torch model for its task and check it: one file, fixed or dynamic batch, checker
full_check, parity with PyTorch on test inputs judged by the task. The export stage and the
teacher stage both export through here."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from compress.config.stages import ExportConfig
from compress.errors import ConfigError, StageError
from compress.export.torch_onnx import export_onnx, onnx_outputs
from compress.tasks.base import Parity, Task


def check_parity(task: Task, model: nn.Module, path: Path, test, cfg: ExportConfig) -> Parity:
    """PyTorch vs ONNX Runtime on the first ``cfg.parity_samples`` test samples."""
    from torch.utils.data import Subset

    from compress.common.ort import make_session
    from compress.tasks.base import ort_arrays

    subset = Subset(test, range(min(cfg.parity_samples, len(test))))
    feeds, _ = ort_arrays(task, subset, make_session(path, 1, "basic"))
    ref, got = onnx_outputs(model, path, feeds)
    return task.parity(ref, got, {"atol": cfg.atol, "min_agreement": cfg.min_agreement})


def export_checked(model: nn.Module, task: Task, example: dict, path: Path, cfg: ExportConfig,
                   test) -> dict:
    """Export, then check parity on test inputs; raises ``StageError`` when it does not hold.

    Sentence embedders export through ``export_embedder`` (pooling and normalisation inside the
    graph; a dynamic batch and sequence axis, or fixed ``[1, seq_len]`` for mobile)."""
    if task.sequence_axis is not None:
        from compress.export.hf import export_embedder

        if not cfg.dynamic_batch and cfg.batch_size != 1:
            raise ConfigError(f"export.batch_size: sequence models export fixed [1, seq_len] shapes "
                              f"(got batch_size {cfg.batch_size}); use dynamic_batch: true")
        export_embedder(model, path, seq_len=None if cfg.dynamic_batch else cfg.seq_len,
                        exporter=cfg.exporter, opset=cfg.opset)
    else:
        export_onnx(model, example, path, cfg.opset, cfg.dynamic_batch, cfg.exporter,
                    output_names=task.output_names)
    parity = check_parity(task, model, path, test, cfg)
    if not parity.ok:
        raise StageError(f"ONNX parity failed on {parity.samples} test inputs: {parity.message}")
    return {**parity.values, "parity_samples": parity.samples, "parity_split": "test"}
