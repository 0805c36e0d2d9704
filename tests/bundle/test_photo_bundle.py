"""A bundle from a ``python:`` image factory (RGB, ImageNet mean/std, shorter side 256, crop 224)
predicts right on a 427x640 photo; a factory that records no preprocessing makes ``package``
refuse with one line."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.bundle.conftest import export, onnx_teacher_config, run_pipeline

FACTORY = "tests.bundle.photo_factory:photos"


def _train(ds):
    import torch
    from torch import nn

    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(3, 8, 8, stride=8), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                      nn.Flatten(), nn.Linear(8, 2))
    opt = torch.optim.Adam(m.parameters(), lr=0.02)
    x, y = ds.tensors
    for _ in range(60):
        opt.zero_grad()
        nn.functional.cross_entropy(m(x), y).backward()
        opt.step()
    return m.eval()


@pytest.fixture(scope="module")
def photo_run(tmp_path_factory):
    from tests.bundle.photo_factory import photos

    folder = tmp_path_factory.mktemp("photo")
    onnx = export(_train(photos()["train"]), folder / "photo.onnx", (1, 3, 224, 224))
    cfg = onnx_teacher_config(onnx, {"source": "python", "python": FACTORY}, "photos")
    code, out = run_pipeline(folder, cfg)
    assert code == 0, out
    return folder, onnx


def test_factory_bundle_predicts_right_on_a_photo_of_any_size(photo_run, runner, tmp_path):
    import onnxruntime as ort
    from PIL import Image
    from sklearn.datasets import load_sample_images

    from tests.bundle.photo_factory import MEAN, STD, transform

    folder, onnx = photo_run
    bundle = folder / "run" / "bundle"
    pre = json.loads((bundle / "preprocess.json").read_text())
    assert (pre["color"], pre["size"], pre["resize"], pre["resize_shorter"], pre["mean"],
            pre["std"], pre["labels"]) == ("rgb", [224, 224], "shorter_side_center_crop", 256,
                                           MEAN, STD, ["china", "flower"])
    china, flower = load_sample_images().images
    Image.fromarray(china).save(tmp_path / "china.jpg")  # 427x640, as scikit-learn ships it
    Image.fromarray(flower).resize((300, 500)).save(tmp_path / "flower.png")
    assert runner.main([str(bundle), str(tmp_path / "china.jpg"), str(tmp_path / "flower.png"),
                        "--json", str(tmp_path / "p.json")]) == 0
    preds = json.loads((tmp_path / "p.json").read_text())["predictions"]
    sess = ort.InferenceSession(str(onnx), providers=["CPUExecutionProvider"])
    for pred, name, file in zip(preds, ("china", "flower"), ("china.jpg", "flower.png"),
                                strict=True):
        pixels = np.asarray(Image.open(tmp_path / file).convert("RGB"))  # as decoded
        mine = transform(pixels).numpy()[None]  # the factory's own torch preprocessing
        x = runner.image_array(tmp_path / file, pre)
        assert x.shape == (1, 3, 224, 224) and np.max(np.abs(x - mine)) <= 1e-3
        assert pred["class"] == int(sess.run(None, {"input": mine})[0].argmax())
        assert pred["label"] == name  # right, not only consistent


def test_a_factory_without_a_record_makes_package_refuse(tmp_path, photo_run):
    _, onnx = photo_run
    data = {"source": "python", "python": FACTORY, "kwargs": {"with_record": False, "n_train": 4}}
    code, out = run_pipeline(tmp_path, onnx_teacher_config(onnx, data, "no-record"))
    assert code == 2
    line = [ln for ln in out.splitlines() if ln.startswith("error")]
    assert line == [  # refused when the config loads, before the teacher or a benchmark runs
        f"error: {tmp_path / 'pipe.yaml'}:8 data.preprocess: the package stage ships how a raw "
        f"input becomes the model input, and {FACTORY} returns no preprocessing record: set "
        "data.preprocess (color, size, resize, scale, mean, std; see "
        "compress/config/preprocess.py), or return it from the factory as {'train': ..., "
        "'val': ..., 'preprocess': ...}"], out
    assert not (tmp_path / "run").exists()
