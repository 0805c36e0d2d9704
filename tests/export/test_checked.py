"""The export both stages run (export_checked): the file, and parity on test inputs judged by
the task; a parity miss fails with the measured numbers."""

from __future__ import annotations

import onnx
import pytest
import torch

from compress.config.stages import ExportConfig
from compress.data.sources import DataConfig, load_data
from compress.errors import ConfigError, StageError
from compress.export.checked import export_checked
from compress.models.cnn import ResNet
from compress.tasks.classification import ClassificationTask

TASK = ClassificationTask()


@pytest.fixture(scope="module")
def setup():
    data = load_data(DataConfig(image_size=16), seed=0)
    torch.manual_seed(0)
    return data, ResNet(1, 10, width=8, depth=(1, 1)).eval()


def test_export_checked_measures_parity_on_test_inputs(setup, tmp_path):
    data, model = setup
    cfg = ExportConfig(parity_samples=40)
    parity = export_checked(model, TASK, TASK.example(data.test), tmp_path / "m.onnx", cfg,
                            data.test)
    assert parity.ok and parity.samples == 40
    assert parity.max_abs_diff < 1e-4 and parity.top1_agreement == 1.0 and parity.cosine_min is None
    dims = onnx.load(str(tmp_path / "m.onnx")).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in dims] == [1, 1, 16, 16]


def test_a_parity_miss_fails_with_the_numbers(setup, tmp_path):
    data, model = setup
    cfg = ExportConfig(atol=1e-30, parity_samples=16)
    with pytest.raises(StageError) as e:
        export_checked(model, TASK, TASK.example(data.test), tmp_path / "m.onnx", cfg, data.test)
    msg = str(e.value)
    assert msg.startswith("ONNX parity failed on 16 test inputs: max abs diff ")
    assert msg.endswith("(atol 1e-30), top-1 agreement 1.0000 (min 0.99)")


def test_sequence_models_refuse_a_fixed_batch_other_than_1(setup, tmp_path):
    from compress.tasks.embedding import EmbeddingTask

    data, model = setup
    with pytest.raises(ConfigError, match="export.batch_size: sequence models export fixed"):
        export_checked(model, EmbeddingTask(), {}, tmp_path / "m.onnx", ExportConfig(batch_size=4),
                       data.test)
