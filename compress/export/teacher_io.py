"""An ONNX teacher made one with its task: its inputs and outputs matched to the task's (which to
rename, which to feed zeros, whether the embedding's pooling is missing, whether dtypes and
shapes fit the data), and the graph rewritten to the task's names.

Two callers, one rule: the config loader (``compress validate``, ``pipeline``, ``search``) runs
``check_teacher_config`` so a model exported under other names fails before any run with the
YAML key to set, and the teacher stage rewrites the graph once (``apply_plan_``) so every later
stage (quantize, benchmark, package) sees the task's own names. It writes ONNX, so it lives with
export; it measures nothing. Torch-free.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from compress.config.yamlmap import Loc, format_path
from compress.errors import InputError

if TYPE_CHECKING:
    import onnx

USER_IO = "compress.user_io"  # metadata: {"inputs": {task: user}, "outputs": {task: user}}
# model inputs a task does not feed but that a standard export has: fed zeros inside the graph
ZERO_INPUTS = ("token_type_ids",)
# numpy dtype names of ONNX element types (the ones models take and give)
_DTYPES = {1: "float32", 10: "float16", 11: "float64", 7: "int64", 6: "int32", 9: "bool", 2: "uint8",
           3: "int8"}


class IOMismatch(InputError):
    """A model whose inputs or outputs do not fit the task or the data; ``loc`` is the YAML path
    to set (``validate`` adds the file and line)."""

    def __init__(self, loc: Loc, detail: str):
        self.loc, self.detail = loc, detail
        super().__init__(f"{format_path(loc)}: {detail}")


@dataclass(frozen=True)
class Port:
    """One graph input or output: its name, numpy dtype name and shape (int: fixed, str:
    symbolic, None: unknown)."""

    name: str
    dtype: str
    shape: tuple[int | str | None, ...]

    def shape_text(self) -> str:
        return "[" + ", ".join("?" if d is None else str(d) for d in self.shape) + "]"


def _port(value) -> Port:
    t = value.type.tensor_type
    dims = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
                 for d in t.shape.dim)
    return Port(value.name, _DTYPES.get(t.elem_type, f"type{t.elem_type}"), dims)


def ports(graph: onnx.GraphProto) -> tuple[list[Port], list[Port]]:
    """The graph's real inputs (initializers excluded) and its outputs."""
    inits = {i.name for i in graph.initializer}
    return [_port(v) for v in graph.input if v.name not in inits], [_port(v) for v in graph.output]


@dataclass
class IOPlan:
    """How the model becomes one with the task's names."""

    inputs: dict[str, str]  # task name -> model name
    outputs: dict[str, str]
    zeros: list[str] = field(default_factory=list)  # model inputs fed zeros inside the graph
    pool: str | None = None  # a [batch, seq, hidden] model output mean-pooled and L2-normalised
    dropped: list[str] = field(default_factory=list)  # model outputs the task does not read

    def changes(self) -> list[str]:
        """What the rewrite does, one phrase each (empty when the model fits as it is)."""
        out = [f"input {m} -> {t}" for t, m in self.inputs.items() if t != m]
        out += [f"{z} fed zeros" for z in self.zeros]
        if self.pool is not None:
            out.append(f"{self.pool} mean-pooled over attention_mask and L2-normalised -> "
                       f"{next(iter(self.outputs))}")
        out += [f"output {m} -> {t}" for t, m in self.outputs.items() if t != m and m != self.pool]
        out += [f"output {d} dropped" for d in self.dropped]
        return out


def _names(ps: list[Port]) -> str:
    return ", ".join(p.name for p in ps) or "none"


def _match(kind: str, task_names: tuple[str, ...], model: list[Port], given: dict[str, str],
           task: str, free: set[str]) -> dict[str, str]:
    """Task name -> model name: as given, else the same name, else the one model name left."""
    loc = ("teacher", kind)
    have = {p.name for p in model}
    for t, m in given.items():
        if t not in task_names:
            raise IOMismatch((*loc, t), f"the {task} task has no {kind[:-1]} {t!r} (its {kind}: "
                             f"{', '.join(task_names)}); map the task's name to the model's")
        if m not in have:
            raise IOMismatch((*loc, t), f"the model has no {kind[:-1]} {m!r} (its {kind}: "
                             f"{_names(model)})")
    out = {t: given.get(t) or (t if t in have else None) for t in task_names}
    taken = {m for m in out.values() if m}
    left = [p.name for p in model if p.name not in taken and p.name not in free]
    missing = [t for t, m in out.items() if m is None]
    if len(missing) == 1 and len(left) == 1:
        out[missing[0]] = left[0]
    elif missing:
        want = ", ".join(f"{t}: <one of {', '.join(left) or 'none'}>" for t in missing)
        raise IOMismatch(loc, f"the {task} task {'feeds' if kind == 'inputs' else 'reads'} "
                         f"{', '.join(missing)} but the model's {kind} are {_names(model)}; "
                         f"set teacher.{kind}: {{{want}}}")
    return out  # type: ignore[return-value]


def plan_io(model_in: list[Port], model_out: list[Port], task: str, task_in: tuple[str, ...],
            task_out: tuple[str, ...], given_in: dict[str, str] | None = None,
            given_out: dict[str, str] | None = None) -> IOPlan:
    """Match the model's names to the task's (raises ``IOMismatch`` naming the key to set)."""
    zeros = {p.name for p in model_in if p.name in ZERO_INPUTS and p.name not in task_in
             and p.name not in (given_in or {}).values() and p.dtype.startswith("int")}
    inputs = _match("inputs", task_in, model_in, given_in or {}, task, zeros)
    extra = [p.name for p in model_in if p.name not in inputs.values() and p.name not in zeros]
    if extra:
        raise IOMismatch(("teacher", "onnx"), f"model input {extra[0]!r} gets no data: the {task} "
                         f"task feeds {', '.join(task_in)} (map them with teacher.inputs)")
    outputs = _match("outputs", task_out, model_out, given_out or {}, task, set())
    ranks = {p.name: len(p.shape) for p in model_out}
    pool = None
    if task == "embedding" and ranks[outputs[task_out[0]]] == 3:
        pool = outputs[task_out[0]]
    dropped = [p.name for p in model_out if p.name not in outputs.values()]
    return IOPlan(inputs, outputs, sorted(zeros), pool, dropped)


@dataclass(frozen=True)
class DataShape:
    """What the data feeds, as far as it is known (None: unknown until the data loads)."""

    image: tuple[int, int, int] | None = None  # (C, H, W) of a classification input
    num_classes: int | None = None  # the count the student scores (stated, or resolved at load)
    channels_settable: bool = False  # data.channels applies (image folders)
    max_label: int | None = None  # the largest label the data holds
    size_settable: bool = False  # data.image_size applies (built-in sources: digits, image folders)


def check_fit(plan: IOPlan, model_in: list[Port], model_out: list[Port], task: str,
              data: DataShape) -> None:
    """Dtypes and shapes of the matched ports against the task and the data."""
    by_in = {p.name: p for p in model_in}
    by_out = {p.name: p for p in model_out}
    onnx_loc = ("teacher", "onnx")
    for m in plan.inputs.values():
        p = by_in[m]
        if task == "classification":
            if not p.dtype.startswith("float") or len(p.shape) != 4:
                raise IOMismatch(onnx_loc, f"input {m!r} is {p.dtype} {p.shape_text()}; the "
                                 "classification task feeds float32 images [N, C, H, W]")
            _check_image(p, data)
        elif p.dtype != "int64" or len(p.shape) != 2:
            raise IOMismatch(onnx_loc, f"input {m!r} is {p.dtype} {p.shape_text()}; the embedding "
                             "task feeds int64 token ids and masks [N, L]")
    out = by_out[next(iter(plan.outputs.values()))]
    if task == "classification":
        if len(out.shape) != 2:
            raise IOMismatch(onnx_loc, f"output {out.name!r} is {out.shape_text()}; the "
                             "classification task reads logits [N, classes]")
        _check_classes(out, data)
    elif len(out.shape) not in (2, 3):
        raise IOMismatch(onnx_loc, f"output {out.name!r} is {out.shape_text()}; the embedding "
                         "task reads [N, D] embeddings (or [N, L, D] hidden states it pools)")


def _check_classes(out: Port, data: DataShape) -> None:
    """A pretrained classifier may score more classes than the data holds: refuse only a label
    it has no class for, or a stated count the student and the teacher would not share."""
    n = out.shape[1]
    if not isinstance(n, int):
        return
    if data.max_label is not None and data.max_label >= n:
        raise IOMismatch(("teacher", "onnx"), f"output {out.name!r} gives {n} classes (ids "
                         f"0-{n - 1}); the data has label {data.max_label}: relabel the data with "
                         "the teacher's class ids, or set teacher.outputs: {logits: <the output "
                         "that scores every class>}")
    if data.num_classes is not None and data.num_classes != n:
        raise IOMismatch(("data", "num_classes"), f"{data.num_classes} classes, but the teacher's "
                         f"output {out.name!r} gives {n} (the student scores the teacher's "
                         f"classes): set data.num_classes: {n}")


def _check_image(p: Port, data: DataShape) -> None:
    if data.image is None:
        return
    c, h, w = data.image
    got = p.shape[1:]
    if isinstance(got[0], int) and got[0] != c:
        fix = f"set data.channels: {got[0]}" if data.channels_settable else f"the data has {c}"
        raise IOMismatch(("data", "channels"), f"the teacher's input {p.name!r} is "
                         f"{p.shape_text()} ({got[0]} channels); {fix}")
    for d, want in zip(got[1:], (h, w), strict=True):
        if isinstance(d, int) and d != want:
            size = "x".join(str(v) for v in got[1:])
            fix = (f"set data.image_size: {d}" if data.size_settable else f"a python: factory "
                   f"must return {size} images, npz arrays must hold them (data.image_size "
                   "applies to the built-in sources only: digits, image_folder)")
            raise IOMismatch(("data", "image_size") if data.size_settable else ("data",),
                             f"the teacher's input {p.name!r} is {p.shape_text()}; the data gives "
                             f"{h}x{w} images: {fix}")


# -- the rewrite ---------------------------------------------------------------------------------


def _rename_value_(graph: onnx.GraphProto, old: str, new: str) -> None:
    """Rename value ``old`` to ``new`` everywhere in ``graph`` (and the subgraphs reading it)."""
    for n in graph.node:
        n.input[:] = [new if x == old else x for x in n.input]
        n.output[:] = [new if x == old else x for x in n.output]
        for a in n.attribute:
            for g in ([a.g] if a.HasField("g") else []) + list(a.graphs):
                _rename_value_(g, old, new)
    for coll in (graph.input, graph.output, graph.value_info, graph.initializer):
        for v in coll:
            if v.name == old:
                v.name = new


def _all_values(graph: onnx.GraphProto) -> set[str]:
    names = {v.name for v in (*graph.input, *graph.output, *graph.value_info, *graph.initializer)}
    for n in graph.node:
        names.update(n.input)
        names.update(n.output)
    return names


def _rename_(graph: onnx.GraphProto, old: str, new: str) -> None:
    if old == new:
        return
    taken = _all_values(graph)
    if new in taken:  # an inner value already has the task's name: move it aside first
        spare = next(f"{new}_{i}" for i in range(1, 10_000) if f"{new}_{i}" not in taken)
        _rename_value_(graph, new, spare)
    _rename_value_(graph, old, new)


def rename_all_(graph: onnx.GraphProto, names: dict[str, str]) -> None:
    """Rename model name -> task name for each pair, through temporary names, so that swapped
    names (the model's ``a`` is the task's ``b`` and the other way round) do not collide."""
    moves = [(t, m) for t, m in names.items() if t != m]
    for i, (_, m) in enumerate(moves):
        _rename_(graph, m, f"__compress_io_{i}")
    for i, (t, _) in enumerate(moves):
        _rename_(graph, f"__compress_io_{i}", t)


def _feed_zeros_(graph: onnx.GraphProto, name: str, like: str) -> None:
    """Replace graph input ``name`` by zeros shaped like input ``like`` (computed in the graph)."""
    from onnx import TensorProto, helper

    port = next(v for v in graph.input if v.name == name)
    zero = helper.make_tensor(f"{name}_zero", port.type.tensor_type.elem_type or TensorProto.INT64,
                              [1], [0])
    head = [helper.make_node("Shape", [like], [f"{name}_shape"]),
            helper.make_node("ConstantOfShape", [f"{name}_shape"], [name], value=zero)]
    keep = [v for v in graph.input if v.name != name]
    del graph.input[:]
    graph.input.extend(keep)
    nodes = [*head, *graph.node]
    del graph.node[:]
    graph.node.extend(nodes)


def stamp_user_names_(model: onnx.ModelProto, plan: IOPlan) -> None:
    """Record in ``model``'s metadata the names ``plan`` renames (nothing when none), for the
    shipped model to take back (``compress.export.shipped_names``)."""
    import onnx

    names = {"inputs": {t: m for t, m in plan.inputs.items() if t != m},
             "outputs": {t: m for t, m in plan.outputs.items() if t != m and m != plan.pool}}
    if not (names["inputs"] or names["outputs"]):
        return
    props = {p.key: p.value for p in model.metadata_props}
    onnx.helper.set_model_props(model, {**props, USER_IO: json.dumps(names, sort_keys=True)})


def apply_plan_(model: onnx.ModelProto, plan: IOPlan, task_out: tuple[str, ...]) -> None:
    """Rewrite ``model`` in place so it takes and gives the task's names (the user's own names
    stamped in its metadata, for the shipped model to take back)."""
    stamp_user_names_(model, plan)
    g = model.graph
    rename_all_(g, plan.inputs)
    for z in plan.zeros:
        _feed_zeros_(g, z, next(iter(plan.inputs)))
    keep = [v for v in g.output if v.name not in plan.dropped]
    del g.output[:]
    g.output.extend(keep)
    if plan.pool is not None:
        from compress.export.hf import add_pooling_

        add_pooling_(model, hidden=plan.pool)  # gives the task's output, sentence_embedding
        return
    rename_all_(g, plan.outputs)
    order = {n: i for i, n in enumerate(task_out)}
    outs = sorted(g.output, key=lambda v: order.get(v.name, len(order)))
    del g.output[:]
    g.output.extend(outs)


# -- external data -------------------------------------------------------------------------------


def external_files(path: str | Path) -> list[Path]:
    """The external data files an ONNX model refers to, beside it (existing or not)."""
    import onnx
    from google.protobuf.message import DecodeError
    from onnx.external_data_helper import ExternalDataInfo, uses_external_data

    try:
        proto = onnx.load(str(path), format="protobuf", load_external_data=False)
    except (DecodeError, OSError, ValueError):
        return []  # not an ONNX file: the teacher stage says so
    locs = {ExternalDataInfo(t).location for t in proto.graph.initializer if uses_external_data(t)}
    return [Path(path).parent / loc for loc in sorted(locs)]


def weights_sha256(model: onnx.ModelProto) -> str:
    """A hash of every initializer's bytes (loaded), whichever file holds them."""
    from onnx import numpy_helper

    h = hashlib.sha256()
    for t in model.graph.initializer:
        h.update(t.name.encode())
        h.update(numpy_helper.to_array(t).tobytes())
    return h.hexdigest()


def check_teacher_config(cfg, config_path: Path) -> None:
    """``compress validate``: an onnx teacher's names, dtypes and shapes against the task and the
    data config (``ConfigError`` with ``file:line`` and the key to set)."""
    import onnx
    from google.protobuf.message import DecodeError

    from compress.config.yamlmap import line_of, load_yaml
    from compress.errors import ConfigError
    from compress.tasks import make_task

    src = cfg.teacher.onnx
    if src is None or not Path(src).is_file():
        return
    try:
        proto = onnx.load(str(src), format="protobuf", load_external_data=False)
    except (DecodeError, OSError, ValueError) as e:
        raise InputError(f"teacher.onnx: {src}: not a valid ONNX model ({type(e).__name__})") from e
    task = make_task(cfg.task)
    d = cfg.data
    image = None
    if d.source in ("digits", "image_folder"):
        image = (1 if d.source == "digits" else d.channels, d.image_size, d.image_size)
    shape = DataShape(image, d.num_classes, d.source == "image_folder",
                      9 if d.source == "digits" else None, size_settable=image is not None)
    try:
        model_in, model_out = ports(proto.graph)
        plan = plan_io(model_in, model_out, task.name, task.input_names, task.output_names,
                       cfg.teacher.inputs, cfg.teacher.outputs)
        check_fit(plan, model_in, model_out, task.name, shape)
    except IOMismatch as e:
        _, lines = load_yaml(config_path)
        raise ConfigError(f"{config_path}:{line_of(lines, e.loc)} {e}") from None


def check_teacher_file(cfg, config_path: Path) -> None:
    """``compress validate``: ``teacher.onnx`` is a file, and the external data files it names
    are beside it (read from the graph, the weights not loaded); ``ConfigError`` with
    ``file:line`` naming the folder or the missing file."""
    from compress.config.yamlmap import line_of, load_yaml
    from compress.errors import ConfigError

    src = cfg.teacher.onnx
    if src is None or not Path(src).exists():
        return  # a missing file is named by check_files
    problem = None
    if Path(src).is_dir():
        inside = sorted(p.name for p in Path(src).glob("*.onnx"))
        hint = f" (it holds {', '.join(inside)})" if inside else ""
        problem = f"{src} is a folder; give the .onnx file{hint}"
    else:
        missing = [p for p in external_files(src) if not p.is_file()]
        if missing:
            problem = (f"{src} keeps its weights in external data, and {missing[0]} is missing: "
                       f"put it beside {Path(src).name} (an ONNX export writes both files)")
    if problem:
        _, lines = load_yaml(config_path)
        raise ConfigError(f"{config_path}:{line_of(lines, ('teacher', 'onnx'))} teacher.onnx: "
                          f"{problem}")


def teacher_classes(cfg) -> int | None:
    """The output width of an ONNX classifier teacher (None: no such teacher, or a width the
    graph does not fix). Data loading takes it as the class count when none is stated, on every
    run and resume alike, so the student scores the classes the teacher's soft targets cover."""
    import onnx
    from google.protobuf.message import DecodeError

    from compress.tasks import make_task

    src = cfg.teacher.onnx
    if src is None or not Path(src).is_file():
        return None
    task = make_task(cfg.task)
    if task.name != "classification":
        return None
    try:
        proto = onnx.load(str(src), format="protobuf", load_external_data=False)
        model_in, model_out = ports(proto.graph)
        plan = plan_io(model_in, model_out, task.name, task.input_names, task.output_names,
                       cfg.teacher.inputs, cfg.teacher.outputs)
    except (DecodeError, OSError, ValueError, IOMismatch):
        return None  # the teacher stage names what is wrong with the file
    out = next(p for p in model_out if p.name == plan.outputs[task.output_names[0]])
    n = out.shape[1] if len(out.shape) == 2 else None
    return n if isinstance(n, int) else None
