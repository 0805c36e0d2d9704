"""ONNX export of sentence embedders with pooling and normalisation inside the graph.

Inputs ``input_ids`` and ``attention_mask`` (int64), output ``sentence_embedding`` [B, D]. Shapes
are dynamic in batch and sequence (servers) or fixed to ``[1, seq_len]`` (mobile runtimes take
whole graphs only then). One file, weights inside, checked with ``onnx.checker`` ``full_check``.

Exporters: ``torchscript`` (torch.onnx, ``dynamo=False``), ``dynamo`` (torch.onnx) and
``optimum`` (optimum-onnx's ``main_export`` of the encoder, then the pooling appended in ONNX;
only with the ``optimum`` extra, which resolves transformers<4.58: see ``optimum_missing``).
All three match PyTorch to a max abs diff of about 2e-7. ``benchmarks/minilm_export.py`` measured
them (ORT 1.32, batch 1, seq 128, 1 thread, p50 of 200 interleaved runs, CPU clock, ms):

    model / ORT level        torchscript+eager  torchscript+sdpa  dynamo+sdpa  optimum
    MiniLM-L6, basic               32.8              35.0            33.4        33.4
    MiniLM-L6, extended            30.2              30.2            35.6        31.7
    MiniLM-L6, all                 34.5              34.6            38.3        34.5
    3-layer student, extended      14.2              15.5            16.5        15.5

torchscript with eager attention at ORT level ``extended`` is the fastest (eager attention lets ORT
fold the score scaling into FusedMatMul); it is the default. dynamo's graphs get
SkipLayerNormalization but no BiasGelu and run slower at extended/all.
"""

from __future__ import annotations

import logging
import tempfile
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from compress.common.files import atomic_write
from compress.errors import StageError

if TYPE_CHECKING:
    import numpy as np
    import onnx
    import torch

    from compress.models.hf import SentenceEmbedder

Exporter = Literal["torchscript", "dynamo", "optimum"]
DEFAULT_EXPORTER: Exporter = "torchscript"
DEFAULT_ATTENTION = "eager"
INPUTS = ("input_ids", "attention_mask")
OUTPUT = "sentence_embedding"


def export_embedder(embedder: SentenceEmbedder, path: str | Path, seq_len: int | None = None,
                    exporter: Exporter = DEFAULT_EXPORTER, opset: int = 18,
                    tokenizer_dir: str | Path | None = None,
                    attention: str | None = DEFAULT_ATTENTION, output: str = OUTPUT) -> Path:
    """Export ``embedder`` to one checked ONNX file at ``path``.

    Args:
        seq_len: fixed ``[1, seq_len]`` inputs; ``None`` for dynamic batch and sequence axes.
        exporter: ``torchscript``, ``dynamo`` or ``optimum``.
        tokenizer_dir: only read by ``optimum`` (it exports from a saved directory).
        attention: the attention implementation traced by the torch exporters (``eager``,
            ``sdpa``); ``None`` keeps the model's own. optimum reloads the saved model and
            uses its default.
        output: the output's name (a sequence classifier's ``logits``; torch exporters only).
    """
    import onnx

    from compress.export.torch_onnx import strip_debug_metadata_
    from compress.models.hf import with_attention

    if exporter == "optimum" and output != OUTPUT:
        raise StageError(f"the optimum exporter appends sentence-embedding pooling; a model with "
                         f"output {output!r} exports with torchscript or dynamo")
    if exporter == "optimum":
        from compress.common.env import optimum_missing

        why = optimum_missing("optimum.exporters.onnx")
        if why is not None:
            raise StageError(f"the optimum exporter is not available: {why}; "
                             "the torchscript and dynamo exporters need no extra")
    if attention and exporter != "optimum":
        embedder = with_attention(embedder, attention)

    def write(tmp: Path) -> None:
        if exporter == "optimum":
            proto = _optimum_graph(embedder, seq_len, opset, tokenizer_dir)
        else:
            _torch_export(embedder, tmp, seq_len, exporter == "dynamo", opset, output)
            proto = onnx.load(str(tmp))
        strip_debug_metadata_(proto)
        try:
            onnx.checker.check_model(proto, full_check=True)
        except onnx.checker.ValidationError as e:
            raise StageError(f"{exporter} export produced an invalid ONNX model: {e}") from e
        onnx.save(proto, str(tmp))

    return atomic_write(path, write)


def _example(seq_len: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    import torch

    # Two rows and a padded tail so no dimension is specialised to 1 and the mask path is traced.
    batch, length = (1, seq_len) if seq_len else (2, 16)
    ids = torch.randint(1000, 2000, (batch, length), generator=torch.Generator().manual_seed(0))
    mask = torch.ones(batch, length, dtype=torch.long)
    mask[-1, length // 2:] = 0
    return ids, mask


def _torch_export(embedder: SentenceEmbedder, tmp: Path, seq_len: int | None, dynamo: bool,
                  opset: int, output: str = OUTPUT) -> None:
    import torch

    kwargs: dict = {}
    if seq_len is None and dynamo:
        batch, seq = torch.export.Dim("batch", min=1, max=4096), torch.export.Dim("sequence",
                                                                                  min=2, max=512)
        kwargs["dynamic_shapes"] = {n: {0: batch, 1: seq} for n in INPUTS}
    elif seq_len is None:
        kwargs["dynamic_axes"] = {**{n: {0: "batch", 1: "sequence"} for n in INPUTS},
                                  output: {0: "batch"}}
    if dynamo:
        kwargs["report"] = False
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    # transformers 5's mask code leaves a Reshape the constant folder cannot evaluate: it says so
    # per export and keeps the node (the graph is right; parity checks it)
    logging.getLogger("onnxscript.optimizer._constant_folding").setLevel(logging.ERROR)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(embedder.eval().cpu(), _example(seq_len), str(tmp),
                          input_names=list(INPUTS), output_names=[output], opset_version=opset,
                          dynamo=dynamo, external_data=False, verbose=False, **kwargs)


def _optimum_graph(embedder: SentenceEmbedder, seq_len: int | None, opset: int,
                   tokenizer_dir: str | Path | None) -> onnx.ModelProto:
    import onnx
    from optimum.exporters.onnx import main_export

    from compress.models.hf import save_embedder

    with tempfile.TemporaryDirectory() as work:
        src, out = Path(work) / "model", Path(work) / "onnx"
        save_embedder(embedder, src, tokenizer_dir)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            main_export(str(src), str(out), task="feature-extraction", opset=opset,
                        library_name="transformers", local_files_only=True, do_validation=False)
        proto = onnx.load(str(out / "model.onnx"))
    add_pooling_(proto)
    if seq_len is not None:
        fix_shapes_(proto, seq_len)
    return proto


def add_pooling_(model: onnx.ModelProto, hidden: str = "last_hidden_state") -> None:
    """Append mean pooling over ``attention_mask`` and L2 normalisation to an encoder graph, in
    place; ``token_type_ids`` (if an input) becomes zeros computed from ``input_ids``."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    g = model.graph
    names = {i.name for i in g.input}
    if hidden not in {o.name for o in g.output} or not set(INPUTS) <= names:
        raise StageError(f"encoder graph lacks {hidden!r} or inputs {INPUTS} "
                         f"(has inputs {sorted(names)})")
    const = [numpy_helper.from_array(a, n) for n, a in _pool_constants().items()]
    g.initializer.extend(const)
    nodes = [
        helper.make_node("Cast", ["attention_mask"], ["pool_mask"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["pool_mask", "pool_axis_last"], ["pool_mask3"]),
        helper.make_node("Mul", [hidden, "pool_mask3"], ["pool_masked"]),
        helper.make_node("ReduceSum", ["pool_masked", "pool_axis_seq"], ["pool_sum"], keepdims=0),
        helper.make_node("ReduceSum", ["pool_mask3", "pool_axis_seq"], ["pool_count0"], keepdims=0),
        helper.make_node("Max", ["pool_count0", "pool_min_count"], ["pool_count"]),
        helper.make_node("Div", ["pool_sum", "pool_count"], ["pool_mean"]),
        helper.make_node("Mul", ["pool_mean", "pool_mean"], ["pool_sq"]),
        helper.make_node("ReduceSum", ["pool_sq", "pool_axis_last"], ["pool_ss"], keepdims=1),
        helper.make_node("Sqrt", ["pool_ss"], ["pool_norm0"]),
        helper.make_node("Max", ["pool_norm0", "pool_min_norm"], ["pool_norm"]),
        helper.make_node("Div", ["pool_mean", "pool_norm"], [OUTPUT]),
    ]
    if "token_type_ids" in names:
        zero = helper.make_tensor("pool_zero", TensorProto.INT64, [1], [0])
        head = [helper.make_node("Shape", ["input_ids"], ["pool_ids_shape"]),
                helper.make_node("ConstantOfShape", ["pool_ids_shape"], ["token_type_ids"],
                                 value=zero)]
        nodes = [*head, *g.node, *nodes]  # the zeros must precede their first reader
        keep = [i for i in g.input if i.name != "token_type_ids"]
        del g.input[:]
        g.input.extend(keep)
    else:
        nodes = [*g.node, *nodes]
    del g.node[:]
    g.node.extend(nodes)
    width = next(o for o in g.output if o.name == hidden).type.tensor_type.shape.dim[-1]
    out = helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, ["batch_size", None])
    out.type.tensor_type.shape.dim[1].CopyFrom(width)
    del g.output[:]
    g.output.append(out)
    onnx.checker.check_model(model)


def _pool_constants() -> dict[str, np.ndarray]:
    import numpy as np

    return {"pool_axis_last": np.array([-1], np.int64), "pool_axis_seq": np.array([1], np.int64),
            "pool_min_count": np.array(1e-9, np.float32),
            "pool_min_norm": np.array(1e-12, np.float32)}


def fix_shapes_(model: onnx.ModelProto, seq_len: int) -> None:
    """Make every input ``[1, seq_len]`` and the output ``[1, D]``, in place."""
    from onnxruntime.tools.onnx_model_utils import fix_output_shapes, make_input_shape_fixed

    for name in INPUTS:
        make_input_shape_fixed(model.graph, name, [1, seq_len])
    fix_output_shapes(model)
