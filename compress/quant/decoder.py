"""Quantized copies of a causal LM's KV-cache decoder graph (``compress.export.kv_cache``).

Precisions:

- ``int8-dynamic``: ``quantize_dynamic``: int8 weights per tensor, activations quantised on each
  call (MatMulInteger). Cheap to make; an LLM's outlier channels can cost it quality.
- ``int8`` and ``int4``: weight-only, ONNX Runtime's ``MatMulNBits`` (symmetric blocks of
  ``block_size`` along the input axis, ``accuracy_level`` 4: int8 activations inside the kernel,
  VNNI where the CPU has it). Activations stay fp32 between the matmuls.

``head=False`` keeps the output head (the MatMul that writes ``logits``) in fp32: a tied head is
exported as its own transposed copy of the embedding, and on a small vocabulary-heavy model it is
the largest single matmul of each decoded token. ``embedding=True`` (``int4`` only) also turns the
embedding ``Gather`` into ``GatherBlockQuantized``: ORT 1.32's quantizer takes 4 bits only for
Gather, and it needs opset 21, so the graph is converted to opset 21 first.

Public API::

    DECODER_PRECISIONS = ("int8-dynamic", "int8", "int4")
    quantize_decoder(src, dst, precision, block_size=32, accuracy_level=4, head=True,
                     embedding=False, symmetric=True) -> Path        # written atomically
    op_counts(path) -> dict[str, int]                # node counts by op type
"""

from __future__ import annotations

import collections
import logging
from pathlib import Path

from compress.common.ort import NBITS_MODULE, nbits_quantizer
from compress.errors import InputError

DECODER_PRECISIONS = ("int8-dynamic", "int8", "int4")
GATHER_OPSET = 21


def op_counts(path: str | Path) -> dict[str, int]:
    """How many nodes of each op type the graph holds."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    return dict(collections.Counter(n.op_type for n in graph.node))


def _head_nodes(model) -> list[str]:
    """The MatMul that writes the graph output ``logits`` (the output head)."""
    return [n.name for n in model.graph.node
            if n.op_type == "MatMul" and "logits" in n.output]


def _check(precision: str, embedding: bool) -> None:
    if precision not in DECODER_PRECISIONS:
        raise InputError(f"precision: unknown decoder precision {precision!r} "
                         f"(valid: {', '.join(DECODER_PRECISIONS)})")
    if embedding and precision != "int4":
        raise InputError(f"embedding: only int4 quantizes the embedding Gather "
                         f"(onnxruntime's GatherBlockQuantized), not {precision}")


def _weight_only(model, bits: int, block_size: int, accuracy_level: int, exclude: list[str],
                 embedding: bool, symmetric: bool):
    from onnx import version_converter

    nbits = nbits_quantizer()
    ops = ("MatMul", "Gather") if embedding else ("MatMul",)
    if embedding:
        model = version_converter.convert_version(model, GATHER_OPSET)
    config = nbits.DefaultWeightOnlyQuantConfig(
        block_size=block_size, is_symmetric=symmetric, accuracy_level=accuracy_level, bits=bits,
        op_types_to_quantize=ops, quant_axes=(("MatMul", 0), ("Gather", 1)))
    quantizer = nbits.MatMulNBitsQuantizer(model, nodes_to_exclude=exclude, algo_config=config)
    quantizer.process()
    return quantizer.model.model


def quantize_decoder(src: str | Path, dst: str | Path, precision: str, block_size: int = 32,
                     accuracy_level: int = 4, head: bool = True,
                     embedding: bool = False, symmetric: bool = True) -> Path:
    """Write a ``precision`` copy of the decoder graph ``src`` to ``dst`` (atomically).
    ``symmetric=False`` gives the weight-only precisions a zero point per block."""
    import onnx

    from compress.common.files import atomic_write

    _check(precision, embedding)
    model = onnx.load(str(src))
    exclude = [] if head else _head_nodes(model)

    def write(tmp: Path) -> None:
        loggers = [logging.getLogger(), logging.getLogger(NBITS_MODULE)]
        levels = [lg.level for lg in loggers]
        for lg in loggers:  # ORT's quantizers log each node, on the root logger and their own
            lg.setLevel(logging.ERROR)
        try:
            if precision == "int8-dynamic":
                from onnxruntime.quantization import QuantType, quantize_dynamic

                quantize_dynamic(str(src), str(tmp), weight_type=QuantType.QInt8,
                                 op_types_to_quantize=["MatMul"], nodes_to_exclude=exclude)
            else:
                bits = 4 if precision == "int4" else 8
                out = _weight_only(model, bits, block_size, accuracy_level, exclude, embedding,
                                   symmetric)
                onnx.save(out, str(tmp))
        finally:
            for lg, level in zip(loggers, levels, strict=True):
                lg.setLevel(level)

    return atomic_write(dst, write)
