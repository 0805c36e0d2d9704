"""Step 00: load or train the teacher, then export its ONNX (the same checked export as the
export stage's) so every later model is measured against it in the same run."""

from __future__ import annotations

from typing import Any

from pydantic import ConfigDict

from compress.artifacts import ModelArtifact, StageResult, save_torch
from compress.config.pipeline import TeacherConfig
from compress.config.stages import ExportConfig, StageConfig
from compress.export.checked import export_checked
from compress.models.build import build_model, load_checkpoint_, model_summary
from compress.stages.base import Stage, StageContext
from compress.train.loop import fit_


class TeacherStageConfig(StageConfig):
    """The teacher section plus the export settings its ONNX shares with the student's."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    teacher: TeacherConfig
    export: ExportConfig

    def takes(self) -> tuple:
        return ()


def export_key(export: ExportConfig) -> dict:
    """Only what shapes the teacher's ONNX file, not the parity limits."""
    return export.model_dump(include={"opset", "dynamic_batch", "batch_size", "seq_len", "exporter"})


class TeacherStage(Stage):
    kind = "teacher"

    def trains(self) -> bool:
        return self.cfg.teacher.checkpoint is None and self.cfg.teacher.train is not None

    def run(self, model: ModelArtifact | None, ctx: StageContext) -> StageResult:
        tcfg: TeacherConfig = self.cfg.teacher
        if tcfg.onnx is not None:
            return _onnx_teacher(tcfg.onnx, ctx)
        data, spec = ctx.data, tcfg.spec()
        net = build_model(spec, _in_channels(data), data.num_classes, "teacher")
        metrics: dict[str, Any] = {}
        if tcfg.checkpoint:
            load_checkpoint_(net, tcfg.checkpoint, "teacher.checkpoint")
        elif tcfg.train is not None:
            fit = fit_(net, ctx.task, data.train, data.val, tcfg.train, data.batch_size, ctx.device,
                       augment_shift=data.augment_shift, seed=ctx.seed, desc="teacher",
                       progress=ctx.progress)
            metrics.update({f"val_{ctx.task.metric}": fit.best_val, "best_epoch": fit.best_epoch,
                            "history": fit.history})
        net.cpu().eval()
        meta = {**model_summary(net, ctx.example()), "stage": "teacher"}
        art = save_torch(ModelArtifact("teacher", "torch", net, spec, meta=meta), ctx.stage_dir)
        path = ctx.stage_dir / "model.onnx"
        cfg: ExportConfig = self.cfg.export
        exported = export_checked(net, ctx.task, ctx.example(cfg.batch_size), path, cfg,
                                  ctx.data.test)
        onnx_art = ModelArtifact.from_onnx("teacher", path, art.precision, **meta)
        metrics.update(exported, bytes=path.stat().st_size, params=meta["params"],
                       macs=meta["macs"])
        publish = [onnx_art]
        if tcfg.optimum_baseline:
            publish.append(_optimum_baseline(onnx_art, ctx, meta))
            metrics["optimum_baseline"] = publish[-1].meta["preset"]
        return StageResult(art, metrics, publish=publish)


def _optimum_baseline(teacher: ModelArtifact, ctx: StageContext, meta: dict) -> ModelArtifact:
    """Optimum's dynamic int8 of the full teacher, the baseline a user would otherwise pick."""
    from compress.quant.ptq import OPTIMUM_PRESETS, detect_target, optimum_dynamic_int8

    isa = detect_target()[0] if ctx.target.isa == "auto" else ctx.target.isa
    path = optimum_dynamic_int8(teacher.path, ctx.stage_dir / "optimum-int8.onnx", isa)
    return ModelArtifact.from_onnx("teacher-optimum-int8", path, "int8",
                                   **{**meta, "preset": f"optimum {OPTIMUM_PRESETS[isa]} dynamic"})


def _in_channels(data) -> int | None:
    return data.input_shape[0] if data.input_shape else None


def _onnx_teacher(src, ctx: StageContext) -> StageResult:
    """A teacher brought as an ONNX file: copied in (checked), passed on as ONNX; no torch model."""
    import math
    import shutil

    import onnx

    from compress.common.files import atomic_write
    from compress.errors import InputError

    try:
        proto = onnx.load(str(src))
        onnx.checker.check_model(proto)
    except Exception as e:  # noqa: BLE001 - onnx raises several types for a bad file: name it
        raise InputError(f"teacher.onnx: {src}: not a valid ONNX model ({type(e).__name__})") from e
    path = atomic_write(ctx.stage_dir / "model.onnx", lambda p: shutil.copyfile(src, p))
    params = sum(math.prod(t.dims) for t in proto.graph.initializer)
    art = ModelArtifact.from_onnx("teacher", path, params=params, stage="teacher")
    return StageResult(art, {"source": str(src), "params": params}, publish=[art])
