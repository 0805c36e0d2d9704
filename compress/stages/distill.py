"""Distill a student from the teacher: Hinton soft targets with a temperature, FitNets hints,
and training on an unlabeled transfer set."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from compress.artifacts import ModelArtifact, StageResult, count_params, save_torch
from compress.data.sources import DataBundle, with_transfer
from compress.errors import ConfigError
from compress.models.build import build_model, load_checkpoint_, model_summary
from compress.runtime.train import KD, FitResult, TrainConfig, fit_
from compress.stages.base import Stage, StageConfig, StageContext


class Hint(BaseModel):
    model_config = ConfigDict(extra="forbid")

    student: str = Field(description="Student module name (as in named_modules()).")
    teacher: str = Field(description="Teacher module name whose output the student should match.")


class DistillConfig(StageConfig, TrainConfig):
    epochs: int = Field(15, ge=0, le=10000, description="Passes over the training set.")
    lr: float = Field(1e-2, gt=0, le=10, description="Peak learning rate.")
    temperature: float = Field(4.0, gt=0, le=100, description="Softmax temperature of the soft targets.")
    alpha: float = Field(0.7, ge=0, le=1, description="Weight of the soft loss vs the hard-label loss.")
    hints: list[Hint] = Field(default_factory=list, description="FitNets hint pairs.")
    hint_weight: float = Field(1.0, ge=0, description="Weight of each hint's MSE loss.")
    use_labels: bool = Field(
        True, description="false: learn from the teacher's soft targets alone (labels unused)."
    )
    use_transfer: bool = Field(True, description="Add data.transfer (unlabeled) when configured.")


def distill(
    student: nn.Module,
    teacher: nn.Module,
    data: DataBundle,
    cfg: DistillConfig,
    device,
    seed: int = 0,
    progress: bool = True,
) -> FitResult:
    """Train ``student`` in place against ``teacher``; returns the fit history and best accuracy."""
    train = with_transfer(data.train, data.transfer if cfg.use_transfer else None, cfg.use_labels)
    kd = KD(cfg.temperature, cfg.alpha, [(h.student, h.teacher) for h in cfg.hints], cfg.hint_weight)
    train_cfg = TrainConfig.of(cfg)
    return fit_(
        student, train, data.val, train_cfg, data.batch_size, device, teacher=teacher, kd=kd,
        augment_shift=data.augment_shift, seed=seed, desc="distill", progress=progress,
    )


class DistillStage(Stage):
    kind = "distill"
    Config = DistillConfig

    def run(self, model: ModelArtifact, ctx: StageContext) -> StageResult:
        cfg: DistillConfig = self.cfg
        scfg = ctx.pipeline.student
        if ctx.teacher is None or ctx.teacher.module is None:
            raise ConfigError(f"{ctx.where}: needs a teacher model in torch form")
        spec = scfg.spec()
        student = build_model(spec, ctx.data.input_shape[0], ctx.data.num_classes, "student")
        if scfg.checkpoint:
            load_checkpoint_(student, scfg.checkpoint, "student.checkpoint")
        _check_hints(cfg, student, ctx.teacher.module, ctx.where)
        result = distill(student, ctx.teacher.module, ctx.data, cfg, ctx.device, ctx.seed, ctx.progress)
        student.cpu().eval()
        summary = model_summary(student, ctx.example())
        art = ModelArtifact("student", "torch", student, spec, meta={**summary, "stage": ctx.stage_name})
        save_torch(art, ctx.stage_dir)
        metrics = {
            "val_accuracy": result.best_val_accuracy,
            "best_epoch": result.best_epoch,
            "samples_per_s": round(result.samples_per_s, 1),
            "history": result.history,
            "params": count_params(student),
            "macs": summary["macs"],
        }
        return StageResult(art, metrics)


def _check_hints(cfg: DistillConfig, student: nn.Module, teacher: nn.Module, where: str) -> None:
    for i, h in enumerate(cfg.hints):
        for side, model, name in (("student", student, h.student), ("teacher", teacher, h.teacher)):
            names = dict(model.named_modules())
            if name not in names:
                top = ", ".join(n for n in names if n and "." not in n)
                raise ConfigError(
                    f"{where}.hints[{i}].{side}: no module {name!r} in the {side} "
                    f"(top-level modules: {top})"
                )


STAGE = DistillStage
