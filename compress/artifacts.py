"""What flows between stages: a model artifact (torch module or ONNX file) and a stage result."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from torch import nn

from compress.runtime.files import atomic_write, sha256_file, write_json


@dataclass
class ModelArtifact:
    """A model between stages.

    A torch artifact holds the live ``module`` and the ``spec`` that rebuilds it (builder, kwargs,
    pruned widths); an ONNX artifact holds a ``path``. ``sha256`` identifies the weights.
    """

    name: str
    format: Literal["torch", "onnx"]
    module: nn.Module | None = None
    spec: dict[str, Any] | None = None
    path: Path | None = None
    sha256: str = ""
    precision: Literal["fp32", "int8", "mixed"] = "fp32"
    meta: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_onnx(cls, name: str, path: Path, precision: str = "fp32", **meta: Any) -> ModelArtifact:
        return cls(name, "onnx", path=Path(path), sha256=sha256_file(path), precision=precision, meta=meta)


def save_torch(art: ModelArtifact, folder: Path) -> ModelArtifact:
    """Write ``model.safetensors`` + ``model.json`` (spec, name, meta); sets ``path`` and ``sha256``."""
    from safetensors.torch import save_file

    state = {k: v.detach().cpu().contiguous() for k, v in art.module.state_dict().items()}
    weights = folder / "model.safetensors"
    atomic_write(weights, lambda p: save_file(state, str(p)))
    art.path, art.sha256 = weights, sha256_file(weights)
    write_json(
        folder / "model.json",
        {"name": art.name, "format": "torch", "spec": art.spec, "sha256": art.sha256,
         "precision": art.precision, "meta": art.meta},
    )
    return art


def load_torch(folder: Path, in_channels: int, num_classes: int) -> ModelArtifact:
    """Rebuild a saved torch artifact from its spec and load its weights (no pickle involved)."""
    from compress.models.build import build_model, load_checkpoint_

    info = json.loads((folder / "model.json").read_text())
    model = build_model(info["spec"], in_channels, num_classes, where=str(folder / "model.json"))
    load_checkpoint_(model, folder / "model.safetensors", where=str(folder / "model.safetensors"))
    return ModelArtifact(
        info["name"], "torch", model.eval(), info["spec"], folder / "model.safetensors",
        info["sha256"], info.get("precision", "fp32"), info.get("meta", {}),
    )


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@dataclass
class StageResult:
    """A stage's output: the model passed on, the named models to benchmark, and its metrics."""

    model: ModelArtifact
    metrics: dict[str, Any] = field(default_factory=dict)
    publish: list[ModelArtifact] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
