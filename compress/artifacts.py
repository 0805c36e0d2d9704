"""What flows between stages: a model artifact (torch module or ONNX file), a stage result, and
the typed measurement of a model that gates and the report read."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from torch import nn

from compress.common.files import atomic_write, load_json, sha256_file, write_json
from compress.stage_reports import StageReport


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


def count_macs(module: nn.Module, example: Any, exporter: str = "torchscript",
               path: Path | None = None) -> int:
    """MACs of ``module`` on ``example`` (a tensor, a tuple of positional tensors or named ones),
    counted on its exported ONNX graph with ``compress.bench.macs``: the counter every model in
    the report is measured with (torch-pruning's module hooks miss Conv2d subclasses and
    functional convs). ``path``: export there (else a temp file)."""
    import tempfile

    from compress.bench.macs import onnx_macs
    from compress.export.torch_onnx import export_onnx

    if isinstance(example, tuple):
        example = {f"input_{i}": t for i, t in enumerate(example)}  # exported positionally
    if path is not None:
        return onnx_macs(export_onnx(module, example, path, exporter=exporter)).total
    with tempfile.TemporaryDirectory() as tmp:
        return onnx_macs(export_onnx(module, example, Path(tmp) / "model.onnx", exporter=exporter)).total


@dataclass
class ModelMeasurement:
    """One model measured in ONNX Runtime on the file that ships: the report.json model entry.

    ``accuracy`` is the task's headline quality (top-1 accuracy, or mean cosine to the teacher for
    embeddings); ``quality`` holds every metric of the task; ``split`` names the data split they
    were measured on (``test``, never the one that chose epochs or thresholds).
    """

    name: str
    stage: str
    path: str  # relative to the run directory
    sha256: str
    bytes: int
    params: int | None
    macs: int | None
    precision: str
    accuracy: float
    split: str
    quality: dict[str, float]
    task: str
    metric: str
    higher_is_better: bool
    latency_ms: dict[str, float]
    threads: int
    opt_level: str
    runs: int
    samples: str | None = None  # raw per-run latencies (ms), a .npy relative to the run directory
    throughput_per_s: float | None = None
    session_create_ms: float | None = None
    speedup_vs_teacher: float | None = None
    latency_by_length: dict[str, dict[str, float]] | None = None  # sequence models: p50 etc. per length
    eval_sets: dict[str, dict[str, float]] | None = None  # quality on data.eval_sets, by name
    clock: str | None = None  # latency clock: "cpu" (calling thread's CPU time, 1 thread) or "wall"

    @property
    def p50(self) -> float:
        return self.latency_ms["p50"]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelMeasurement:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


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
