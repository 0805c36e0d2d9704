"""Optimizer and schedule settings shared by every training loop (torch-free, for the config)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class TrainConfig(BaseModel):
    """Optimizer and schedule. Shared by teacher training, distill, prune recovery and QAT."""

    model_config = ConfigDict(extra="forbid")

    epochs: int = Field(10, ge=0, le=10000, description="Passes over the training set.")
    lr: float = Field(3e-3, gt=0, le=10, description="Peak learning rate.")
    weight_decay: float = Field(1e-4, ge=0, le=1, description="AdamW/SGD weight decay.")
    optimizer: Literal["adamw", "sgd"] = Field("adamw", description="adamw, or sgd with Nesterov momentum 0.9.")
    schedule: Literal["cosine", "onecycle", "constant"] = Field(
        "onecycle", description="Learning-rate schedule over all steps."
    )
    grad_clip: float = Field(5.0, ge=0, description="Max gradient norm (0: off).")
    batch_size: int | None = Field(None, gt=0, description="Overrides data.batch_size.")

    @classmethod
    def of(cls, cfg: BaseModel) -> TrainConfig:
        """The training fields of a stage config that extends this one."""
        return cls(**{k: getattr(cfg, k) for k in cls.model_fields})
