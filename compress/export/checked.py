"""Export a torch model for its task and check it: one file, fixed or dynamic batch, checker
full_check, parity with PyTorch on test inputs judged by the task. The export stage and the
teacher stage both export through here."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from compress.config.stages import ExportConfig, ParityLimits
from compress.errors import ConfigError, StageError
from compress.export.parity import Parity, check_parity
from compress.export.torch_onnx import export_onnx
from compress.tasks.base import Task


def export_checked(model: nn.Module, task: Task, example: dict, path: Path, cfg: ExportConfig,
                   test) -> Parity:
    """Export, then check parity on the first ``cfg.parity_samples`` test inputs; raises
    ``StageError`` when it does not hold.

    Sentence embedders export through ``export_embedder`` (pooling and normalisation inside the
    graph; a dynamic batch and sequence axis, or fixed ``[1, seq_len]`` for mobile)."""
    if task.sequence_axis is not None:
        from compress.export.hf import export_embedder

        if not cfg.dynamic_batch and cfg.batch_size != 1:
            raise ConfigError(f"export.batch_size: sequence models export fixed [1, seq_len] shapes "
                              f"(got batch_size {cfg.batch_size}); use dynamic_batch: true")
        export_embedder(model, path, seq_len=None if cfg.dynamic_batch else cfg.seq_len,
                        exporter=cfg.exporter, opset=cfg.opset, output=task.output_names[0])
    else:
        export_onnx(model, example, path, cfg.opset, cfg.dynamic_batch, cfg.exporter,
                    output_names=task.output_names)
    parity = check_parity(task, model, path, test, cfg.parity_samples, ParityLimits.of(cfg))
    if not parity.ok:
        raise StageError(f"ONNX parity failed on {parity.samples} test inputs: {parity.message}")
    return parity
