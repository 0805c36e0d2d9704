"""The rules across sections of a pipeline, checked once at validate time: which model format each
stage takes, the ORT level QDQ int8 needs, and the keys the run's task reads. Each refusal names
the YAML path it is about (``At``), so the message reads ``file:line path: message``."""

from __future__ import annotations

from pydantic import BaseModel

from compress.config.stages import Format, StageConfig, TargetConfig
from compress.config.tasks import TASK_USES
from compress.config.yamlmap import Loc

Stages = list[tuple[str, StageConfig]]

# The QDQ rule, written once: ORT fuses QuantizeLinear/DequantizeLinear pairs into int8 kernels
# only at level extended or all; below, a QDQ model runs unfused and slower than fp32. Validate
# refuses a quantize stage or a QDQ teacher at such a level, and the benchmark refuses any QDQ
# model it is handed at one (a model that came in some other way).
UNFUSED_LEVELS = ("disable", "basic")
QDQ_OPS = frozenset({"QuantizeLinear", "DequantizeLinear"})


def fuses_qdq(opt_level: str) -> bool:
    """Whether ORT at ``opt_level`` fuses QDQ int8 models."""
    return opt_level not in UNFUSED_LEVELS


def is_qdq(onnx_path) -> bool:
    """Whether the ONNX file holds QuantizeLinear/DequantizeLinear nodes (weights not loaded)."""
    import onnx

    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    return any(n.op_type in QDQ_OPS for n in graph.node)


def unfused_qdq(opt_level: str, what: str) -> str:
    """The refusal of ``what`` (QDQ int8) at an ``opt_level`` that leaves it unfused."""
    return f"{opt_level!r} leaves {what} unfused and slower than fp32; use 'extended' or 'all'"


class At(ValueError):
    """A validation error about the value at ``loc`` (relative to the model that raises it)."""

    def __init__(self, loc: Loc, message: str):
        super().__init__(message)
        self.loc = tuple(loc)


def _a(fmt: str) -> str:
    return f"an {fmt}" if fmt == "onnx" else f"a {fmt}"


def check_stage_order(stages: Stages, fmt: Format) -> None:
    """Follow the model's format through the stages, as each stage declares it, so a wrong order
    fails here and not mid-run (the engine keeps one invariant check of the same declaration)."""
    for i, (kind, cfg) in enumerate(stages):
        takes = cfg.takes()
        if kind == "distill" and i > 0:  # an ONNX model past the first stage is the student's
            takes = ("torch",)
        if kind == "distill" and fmt == "onnx" and getattr(cfg, "hints", None):
            raise At(("stages", i, kind, "hints"), "hints tap the teacher's inner modules; an ONNX "
                     "teacher has none (give a torch teacher: arch or python with a checkpoint)")
        if fmt not in takes:
            mode = getattr(cfg, "mode", None)
            what = f"quantize mode {mode}" if kind == "quantize" else kind
            needs = takes[0]
            loc = ("stages", i, kind, "mode") if kind == "quantize" else ("stages", i, kind)
            raise At(loc, f"{what} needs {_a(needs)} model, but the stages before it give "
                     f"{_a(fmt)} model"
                     + ("; put it before export" if needs == "torch" else "; put an export stage before it"))
        fmt = cfg.gives(fmt)


def check_opt_level(stages: Stages, target: TargetConfig) -> None:
    """QDQ int8 models fuse only at ORT level extended or all; below, every quantize trial and
    every benchmark of an int8 model would measure an unfused graph slower than fp32."""
    if not fuses_qdq(target.opt_level) and any(k == "quantize" for k, _ in stages):
        raise At(("target", "opt_level"), unfused_qdq(target.opt_level, "int8 QDQ models"))


def qdq_teacher_message(onnx_path, stages: Stages, target: TargetConfig) -> str | None:
    """The refusal of a QDQ int8 teacher file benchmarked at an unfused level (a file check: it
    reads the graph), or None."""
    if fuses_qdq(target.opt_level) or not any(k == "benchmark" for k, _ in stages):
        return None
    if not is_qdq(onnx_path):
        return None
    return (f"{onnx_path} is a QDQ int8 model, and the benchmark at target.opt_level "
            + unfused_qdq(target.opt_level, "it"))


def check_task_keys(task: str, stages: Stages) -> None:
    """Refuse a key the user wrote that the task ignores (defaults never trip this: only
    ``model_fields_set`` counts). Tasks outside the shipped table are not checked."""
    uses = TASK_USES.get(task)
    if uses is None:
        return
    for i, (kind, cfg) in enumerate(stages):
        for loc, part in _parts(cfg):
            ignored = uses.ignored(part.model_fields_set)
            for key in sorted(ignored):
                raise At(("stages", i, kind, *loc, key),
                         f"task {task} ignores this key ({ignored[key]}); remove it")


def _parts(cfg: BaseModel) -> list[tuple[Loc, BaseModel]]:
    """The config and its nested sections that the user may have written (quantize.qat)."""
    out: list[tuple[Loc, BaseModel]] = [((), cfg)]
    for name in sorted(cfg.model_fields_set):
        value = getattr(cfg, name)
        if isinstance(value, BaseModel):
            out += [((name, *loc), part) for loc, part in _parts(value)]
    return out


def check_task_fits(task: str, source: str, stages: Stages, has_layers: bool,
                    text_labels: bool = False, teacher_trained: bool = True) -> None:
    """The task, the data and the layer-wise losses agree, so a mismatch fails at validate."""
    if source == "text" and task not in ("embedding", "sequence-classification", "causal-lm"):
        raise At(("data", "source"), f"text is tokenized for task: embedding, "
                 f"sequence-classification or causal-lm (task is {task})")
    if task == "sequence-classification":
        if source == "text" and not text_labels:
            raise At(("data", "labels"), "task sequence-classification on text needs a labelled "
                     "set: labels: movie-reviews (or source: python)")
        if source in ("digits", "npz", "image_folder"):
            raise At(("task",), f"sequence-classification needs sentences (got {source})")
        if not teacher_trained:
            raise At(("teacher", "train"), "sequence-classification fine-tunes the teacher's new "
                     "head: give teacher.train (or a checkpoint)")
    if task == "embedding" and source in ("digits", "npz", "image_folder"):
        raise At(("task",), f"embedding needs sentences: data.source text or python "
                 f"(got {source})")
    refused = layerwise_refusal(task, has_layers)
    for i, (kind, scfg) in enumerate(stages):
        for key in ("hidden_weight", "attention_weight"):
            if kind == "distill" and getattr(scfg, key) and refused:
                raise At(("stages", i, kind, key), refused)


def layerwise_refusal(task: str, has_layers: bool) -> str | None:
    """Why distill's layer-wise losses cannot run, or None: they need a task that has them
    (``TaskUses.layerwise``) and ``student.layers``. Validate and the distill stage both ask here."""
    use = TASK_USES.get(task)
    if use is not None and use.layerwise and has_layers:
        return None
    tasks = " or ".join(t for t, u in TASK_USES.items() if u.layerwise)
    return (f"layer-wise losses need task: {tasks} and student.layers (the teacher layer of each "
            "student layer)")
