"""Quantized KV-cache decoders: node counts, kernel attributes, and agreement with fp32.

The bounds are for the tiny random Llama below (2 layers, hidden 32, logits within about +-1.75
on these 48 tokens): top-1 agreement with the fp32 graph at least 95% of positions for every
precision; max |logit diff| at most 0.03 for weight-only int8, 0.06 for dynamic int8 and 0.3 for
int4 (measured: 0.014, 0.032, 0.19).
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from compress.errors import InputError
from compress.export.kv_cache import export_kv_decoder, greedy_onnx
from compress.quant.decoder import op_counts, quantize_decoder
from tests._tiny_llama import tiny_llama

LINEARS = 2 * 7 + 1  # q k v o gate up down per layer, and the head


@pytest.fixture(scope="module")
def decoder(tmp_path_factory):
    import torch

    root = tmp_path_factory.mktemp("decoder")
    layout = export_kv_decoder(tiny_llama(layers=2, init=0.05), root / "fp32.onnx")
    ids = torch.randint(3, 97, (1, 48), generator=torch.Generator().manual_seed(0)).numpy()
    return root, layout, ids


def _logits(path, layout, ids):
    from compress.common.ort import make_session

    feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids),
             "position_ids": np.arange(ids.shape[1])[None]}
    feeds.update({n: np.zeros((1, layout.num_kv_heads, 0, layout.head_dim), np.float32)
                  for n in layout.past_names})
    return make_session(path).run(["logits"], feeds)[0][0]


@pytest.mark.parametrize(("precision", "kwargs", "bound", "counts"), [
    ("int8", {}, 0.03, {"MatMulNBits": LINEARS, "MatMul": 4}),
    ("int8-dynamic", {}, 0.06, {"MatMulInteger": LINEARS, "MatMul": 4}),
    ("int4", {}, 0.3, {"MatMulNBits": LINEARS, "MatMul": 4}),
    ("int4", {"head": False}, 0.3, {"MatMulNBits": LINEARS - 1, "MatMul": 5}),
    ("int4", {"embedding": True}, 0.3,
     {"MatMulNBits": LINEARS, "MatMul": 4, "GatherBlockQuantized": 1}),
])
def test_quantized_decoder_agrees_with_fp32(decoder, precision, kwargs, bound, counts):
    root, layout, ids = decoder
    path = quantize_decoder(root / "fp32.onnx", root / f"{precision}.onnx", precision, **kwargs)
    got = op_counts(path)
    assert {k: got.get(k, 0) for k in counts} == counts
    ref, out = _logits(root / "fp32.onnx", layout, ids), _logits(path, layout, ids)
    assert (out.argmax(-1) == ref.argmax(-1)).mean() >= 0.95
    assert np.abs(out - ref).max() <= bound
    # the decode loop runs on the quantized graph: prefill plus 4 steps
    assert len(greedy_onnx(path, layout, ids[0, :8].tolist(), 5)[0]) == 5


def test_matmulnbits_attributes(decoder):
    import onnx

    root, _, _ = decoder
    path = quantize_decoder(root / "fp32.onnx", root / "int4b.onnx", "int4")
    nodes = [n for n in onnx.load(str(path)).graph.node if n.op_type == "MatMulNBits"]
    attrs = {(a.name, a.i) for n in nodes for a in n.attribute
             if a.name in ("bits", "block_size", "accuracy_level")}
    assert attrs == {("bits", 4), ("block_size", 32), ("accuracy_level", 4)}


def test_bad_precision_and_int8_embedding_are_one_line(decoder, tmp_path):
    root, _, _ = decoder
    with pytest.raises(InputError) as e:
        quantize_decoder(root / "fp32.onnx", tmp_path / "x.onnx", "int2")
    assert str(e.value) == ("precision: unknown decoder precision 'int2' "
                            "(valid: int8-dynamic, int8, int4)")
    with pytest.raises(InputError) as e:
        quantize_decoder(root / "fp32.onnx", tmp_path / "x.onnx", "int8", embedding=True)
    assert str(e.value) == ("embedding: only int4 quantizes the embedding Gather "
                            "(onnxruntime's GatherBlockQuantized), not int8")
    assert not (tmp_path / "x.onnx").exists()


def test_asymmetric_blocks_carry_zero_points(decoder):
    import onnx

    root, layout, ids = decoder
    path = quantize_decoder(root / "fp32.onnx", root / "int4a.onnx", "int4", symmetric=False)
    nodes = [n for n in onnx.load(str(path)).graph.node if n.op_type == "MatMulNBits"]
    # inputs: A, B, scales, zero_points: a symmetric block has no zero-point input
    assert len(nodes) == LINEARS and all(len(n.input) >= 4 and n.input[3] for n in nodes)
    ref, out = _logits(root / "fp32.onnx", layout, ids), _logits(path, layout, ids)
    assert np.abs(out - ref).max() <= 0.3


def test_the_nbits_quantizer_is_imported_without_its_root_log_handler():
    # ORT's module runs logging.basicConfig(level=INFO) on import: every later log line of the
    # process would print. Imported plainly it adds a handler; through nbits_quantizer it does not.
    probe = ("import logging; {}; root = logging.getLogger(); "
             "print(len(root.handlers), logging.getLevelName(root.level))")
    plain = probe.format("import onnxruntime.quantization.matmul_nbits_quantizer")
    quiet = probe.format("from compress.common.ort import nbits_quantizer; nbits_quantizer()")
    got = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout.split() for code in (plain, quiet)]
    assert got == [["1", "INFO"], ["0", "WARNING"]]
