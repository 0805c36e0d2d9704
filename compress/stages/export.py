"""Export to ONNX: one file, fixed or dynamic batch, checker full_check, parity with PyTorch."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from compress.artifacts import ModelArtifact, StageResult
from compress.errors import StageError
from compress.runtime.onnx_export import export_onnx, onnx_parity
from compress.stages.base import Stage, StageConfig, StageContext


class ExportConfig(StageConfig):
    opset: int = Field(18, ge=13, le=23, description="ONNX opset.")
    dynamic_batch: bool = Field(
        False, description="A dynamic batch axis; mobile runtimes want fixed shapes (false)."
    )
    batch_size: int = Field(1, gt=0, le=4096, description="The fixed batch size when not dynamic.")
    exporter: Literal["dynamo", "torchscript"] = Field(
        "dynamo", description="torch.onnx exporter: dynamo (default) or the legacy TorchScript one."
    )
    atol: float = Field(1e-3, gt=0, description="Parity: max abs difference of outputs vs PyTorch.")
    min_agreement: float = Field(0.99, ge=0, le=1, description="Parity: top-1 agreement, at least.")
    parity_samples: int = Field(256, gt=0, description="Validation inputs used for the parity check.")


def export_checked(model, example, path, cfg: ExportConfig, inputs) -> dict:
    """Export, then check parity on real inputs; raises ``StageError`` when it does not hold."""
    export_onnx(model, example, path, cfg.opset, cfg.dynamic_batch, cfg.exporter)
    parity = onnx_parity(model, path, inputs[: cfg.parity_samples])
    if parity.max_abs_diff > cfg.atol or parity.top1_agreement < cfg.min_agreement:
        raise StageError(
            f"ONNX parity failed on {parity.samples} validation inputs: max abs diff "
            f"{parity.max_abs_diff:.3g} (atol {cfg.atol:g}), top-1 agreement "
            f"{parity.top1_agreement:.4f} (min {cfg.min_agreement:g})"
        )
    return {"max_abs_diff": parity.max_abs_diff, "top1_agreement": parity.top1_agreement,
            "parity_samples": parity.samples}


class ExportStage(Stage):
    kind = "export"
    Config = ExportConfig

    def run(self, model: ModelArtifact, ctx: StageContext) -> StageResult:
        cfg: ExportConfig = self.cfg
        x, _ = ctx.data.val_arrays()
        path = ctx.stage_dir / "model.onnx"
        metrics = export_checked(model.module, ctx.example(cfg.batch_size), path, cfg, x)
        art = ModelArtifact.from_onnx(model.name, path, model.precision, **{**model.meta, "stage": ctx.stage_name})
        metrics["bytes"] = path.stat().st_size
        return StageResult(art, metrics, publish=[art])


STAGE = ExportStage
