"""What flows between stages: a model artifact (torch module or ONNX file) and a stage result.
The typed measurement of a model that gates and the report read lives in ``compress.records``
(``ModelMeasurement`` is re-exported here)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from torch import nn

from compress.common.files import atomic_write, load_json, sha256_file, write_json
from compress.records.measurement import ModelMeasurement
from compress.records.stage_reports import StageReport


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

    state, seen = {}, set()
    for k, v in art.module.state_dict().items():
        t = v.detach().cpu().contiguous()
        # tied weights (a causal LM's embedding and head) share memory: safetensors takes copies
        state[k] = t.clone() if t.data_ptr() in seen else t
        seen.add(t.data_ptr())
    weights = folder / "model.safetensors"
    atomic_write(weights, lambda p: save_file(state, str(p)))
    art.path, art.sha256 = weights, sha256_file(weights)
    write_json(
        folder / "model.json",
        {"name": art.name, "format": "torch", "spec": art.spec, "sha256": art.sha256,
         "precision": art.precision, "meta": art.meta},
    )
    return art


def load_torch(folder: Path, in_channels: int | None, num_classes: int | None) -> ModelArtifact:
    """Rebuild a saved torch artifact from its spec and load its weights (no pickle involved)."""
    from compress.errors import InputError
    from compress.models.build import build_model, load_checkpoint_

    info = load_json(folder / "model.json", "a saved model's model.json (written by save_torch)")
    missing = [k for k in ("name", "spec", "sha256", "precision", "meta") if k not in info]
    if missing:
        raise InputError(f"{folder / 'model.json'}: missing key(s) {', '.join(missing)}")
    model = build_model(info["spec"], in_channels, num_classes, where=str(folder / "model.json"))
    load_checkpoint_(model, folder / "model.safetensors", where=str(folder / "model.safetensors"))
    return ModelArtifact(
        info["name"], "torch", model.eval(), info["spec"], folder / "model.safetensors",
        info["sha256"], info["precision"], info["meta"],
    )


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@dataclass
class StageResult:
    """A stage's output: the model passed on, its typed report (data for the report: numbers
    and rows, never rendered text), the named models to benchmark, the measurements of a
    benchmark, and the extra files it wrote (hashed into stage.json, checked on resume)."""

    model: ModelArtifact
    report: StageReport
    publish: list[ModelArtifact] = field(default_factory=list)
    files: list[str] = field(default_factory=list)  # relative to the stage folder
    measurements: list[ModelMeasurement] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not isinstance(self.report, StageReport):
            raise TypeError(f"StageResult.report must be a compress.stage_reports.StageReport, "
                            f"got {type(self.report).__name__}")

    @property
    def metrics(self) -> dict[str, Any]:
        """The report as report.json stores it under the stage's ``metrics``."""
        return self.report.as_dict()
