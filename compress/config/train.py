"""Optimizer, schedule, speed and recovery settings shared by every training loop, and the KD pair
every distilling loop reads (torch-free, for the config)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class Part(BaseModel):
    """A group of fields that several configs share, declared once and inherited flat (the YAML
    keys stay where they are); ``of`` takes the group out of a config that extends it."""

    model_config = ConfigDict(extra="forbid")

    @classmethod
    def of(cls, cfg: BaseModel):
        """The fields of this group, read from ``cfg``."""
        return cls(**{k: getattr(cfg, k) for k in cls.model_fields})


class SoftTargets(Part):
    """Hinton knowledge distillation: the soft targets' temperature and their weight. Declared
    here once; distill, prune recovery and QAT inherit it, and a task's ``distill_loss`` reads it."""

    temperature: float = Field(4.0, gt=0, le=100, description="KD softmax temperature of the soft targets.")
    alpha: float = Field(0.7, ge=0, le=1, description="Weight of the soft KD loss vs the hard-label loss.")


class TrainConfig(Part):
    """Optimizer and schedule. Shared by teacher training, distill, prune recovery and QAT."""

    epochs: int = Field(10, ge=0, le=10000, description="Passes over the training set.")
    lr: float = Field(3e-3, gt=0, le=10, description="Peak learning rate.")
    weight_decay: float = Field(1e-4, ge=0, le=1, description="AdamW/SGD weight decay.")
    optimizer: Literal["adamw", "sgd"] = Field("adamw", description="adamw, or sgd with Nesterov momentum 0.9.")
    schedule: Literal["cosine", "onecycle", "constant"] = Field(
        "onecycle", description="Learning-rate schedule over all steps."
    )
    grad_clip: float = Field(5.0, ge=0, description="Max gradient norm (0: off).")
    batch_size: int | None = Field(
        None, gt=0, description="Overrides data.batch_size. The GLOBAL batch: each of N processes takes 1/N."
    )
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="Autocast precision: auto is bf16 on CUDA when supported (else fp16), fp32 on "
        "CPU; fp16 scales the loss (torch.amp.GradScaler)."
    )
    channels_last: bool = Field(True, description="NHWC memory format for image models on CUDA.")
    compile: bool = Field(False, description="torch.compile the model being trained (first steps are slow).")
    group_by_length: bool = Field(
        False, description="Text: each run of 50 batches of the epoch's shuffled order is sorted by "
        "length and cut into batches, whose order is shuffled again, so a batch pads to about its own "
        "length instead of the longest of a random draw (fewer padded tokens per step)."
    )
    workers: int = Field(0, ge=0, le=64, description="DataLoader worker processes (memory is pinned on CUDA).")
    checkpoint_every_steps: int | None = Field(
        None, gt=0, description="Also write a mid-epoch checkpoint every N optimizer steps "
        "(one is always written at each epoch's end)."
    )
    teacher_cache: Literal["auto", "off", "force"] = Field(
        "auto", description="Teacher outputs computed once and kept on disk (RUN_DIR/.cache/teacher). auto: "
        "unless random augmentation or hints make them differ per epoch; force: even with augmentation."
    )
    teacher_topk: int | None = Field(
        None, gt=0, le=100000, description="Keep only the teacher's k largest logits per sample in the cache "
        "(none: all of them)."
    )
