"""Export to ONNX (``compress.export.checked`` does the work: one file, parity with PyTorch on
test inputs, judged by the task)."""

from __future__ import annotations

from compress.artifacts import ModelArtifact, StageResult
from compress.config.stages import ExportConfig
from compress.export.checked import export_checked
from compress.stage_reports import ExportReport
from compress.stages.base import Stage, StageContext


class ExportStage(Stage):
    kind = "export"

    def run(self, model: ModelArtifact, ctx: StageContext) -> StageResult:
        cfg: ExportConfig = self.cfg
        path = ctx.stage_dir / "model.onnx"
        parity = export_checked(model.module, ctx.task, ctx.example(cfg.batch_size), path, cfg,
                                ctx.data.test)
        meta = {**model.meta, "stage": ctx.stage_name}
        art = ModelArtifact.from_onnx(model.name, path, model.precision, **meta)
        return StageResult(art, ExportReport(**parity.metrics(), bytes=path.stat().st_size), publish=[art])
