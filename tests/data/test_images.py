"""The preprocessing record every data source writes, and the rule it states (the data side's copy,
compress/data/images.py; the runner's standalone copy is checked in tests/bundle)."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from PIL import Image

from compress.config.data import DataConfig
from compress.config.preprocess import ImagePreprocess
from compress.data.images import apply_image, digits_record
from compress.data.sources import load_data
from compress.errors import InputError


def test_digits_record_describes_what_the_source_does():
    """A digit written as an 8-bit PNG at its own 8x8 size comes out of the record's rule as
    the source's own tensor, up to the PNG's rounding (half a step of 1/255, / std 0.5)."""
    from sklearn.datasets import load_digits

    d = load_data(DataConfig(image_size=32), seed=0)
    assert d.info.preprocess == digits_record(32) and d.info.class_names == list("0123456789")
    raw = load_digits().images[:40]
    source = torch.nn.functional.interpolate(torch.tensor(raw, dtype=torch.float32)[:, None] / 16,
                                             size=(32, 32), mode="bilinear", align_corners=False)
    source = ((source - 0.5) / 0.5).numpy()
    pngs = np.round(raw / 16 * 255).astype(np.uint8)
    mine = np.stack([apply_image(Image.fromarray(p, "L"), d.info.preprocess) for p in pngs])
    assert np.max(np.abs(mine - source)) <= 1 / 255 + 1e-6
    # dark ink on paper (the border light): invert: auto maps it back onto the same pixels
    inverted = np.stack([apply_image(Image.fromarray(255 - p, "L"), d.info.preprocess)
                         for p in pngs])
    assert np.max(np.abs(inverted - mine)) <= 1e-6


def test_auto_invert_never_fires_on_the_digits_themselves():
    """Measured: the outer ring of every one of the 1,797 digits is dark (mean at most 0.30 of
    the range, 0.17 overall), so auto leaves the data itself alone."""
    from sklearn.datasets import load_digits

    from compress.data.images import _needs_invert

    rec = digits_record(32)
    pngs = np.round(load_digits().images / 16 * 255).astype(np.uint8)
    assert not any(_needs_invert(Image.fromarray(p, "L"), rec) for p in pngs)
    assert all(_needs_invert(Image.fromarray(255 - p, "L"), rec) for p in pngs[:50])


def test_shorter_side_center_crop_keeps_the_aspect():
    rec = ImagePreprocess(color="rgb", size=(4, 6), resize="shorter_side_center_crop",
                          resize_shorter=8, scale=1 / 255, mean=[0, 0, 0], std=[1, 1, 1])
    img = np.zeros((20, 40, 3), np.uint8)
    img[:, 18:22] = 255  # a bright vertical bar in the middle
    x = apply_image(Image.fromarray(img), rec)  # 20x40 -> 8x16 -> centre 4x6
    assert x.shape == (3, 4, 6)
    assert np.allclose(x[:, :, 0], 0, atol=1e-6) and x[:, :, 2:4].min() > 0.4


def test_record_refuses_inconsistent_fields():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="one value per channel \\(3 for rgb\\), got 1 and 1"):
        ImagePreprocess(color="rgb", size=(8, 8), resize="stretch", scale=1, mean=[0], std=[1])
    with pytest.raises(ValidationError, match="needs resize_shorter"):
        ImagePreprocess(color="grayscale", size=(8, 8), resize="shorter_side_center_crop",
                        scale=1, mean=[0], std=[1])


def test_image_folder_trains_on_the_record_rule(tmp_path):
    for c, value in (("cat", 30), ("dog", 220)):
        (tmp_path / c).mkdir()
        for i in range(6):
            Image.fromarray(np.full((20, 30, 3), value + i, np.uint8)).save(tmp_path / c / f"{i}.png")
    d = load_data(DataConfig(source="image_folder", path=tmp_path, image_size=8, channels=3))
    rec = d.info.preprocess
    assert (rec.color, rec.size, rec.scale, rec.mean, rec.std) == ("rgb", (8, 8), 1 / 255,
                                                                   [0.5] * 3, [0.5] * 3)
    assert d.info.class_names == ["cat", "dog"]
    x, _ = d.arrays("test")
    want = apply_image(Image.open(tmp_path / "cat" / "0.png"), rec)
    assert any(np.array_equal(row, want) for row in x) or \
        any(np.array_equal(row, want) for row in d.arrays("train")[0])


def test_npz_record_only_for_8bit_pixels(tmp_path):
    y = np.repeat(np.arange(5), 10)
    np.savez(tmp_path / "p.npz", x=np.random.default_rng(0).integers(0, 256, (50, 12, 12)), y=y)
    np.savez(tmp_path / "f.npz", x=np.random.default_rng(0).normal(size=(50, 3, 8, 8)), y=y)
    pix = load_data(DataConfig(source="npz", path=tmp_path / "p.npz")).info.preprocess
    assert (pix.color, pix.size, pix.scale, pix.mean, pix.std) == ("grayscale", (12, 12), 1.0,
                                                                   [0.0], [1.0])
    floats = load_data(DataConfig(source="npz", path=tmp_path / "f.npz")).info
    assert floats.preprocess is None and "not 8-bit pixels" in floats.source
    stated = {"color": "rgb", "size": [8, 8], "resize": "stretch", "scale": 1 / 255,
              "mean": [0.4, 0.4, 0.4], "std": [0.2, 0.2, 0.2]}
    cfg = DataConfig(source="npz", path=tmp_path / "f.npz", preprocess=stated)
    assert load_data(cfg).info.preprocess == ImagePreprocess(**stated)


FACTORY = '''import torch
from torch.utils.data import TensorDataset
def build(record=None, classes=None, extra=False):
    ds = TensorDataset(torch.randn(40, 3, 8, 8), torch.arange(40) % 2)
    out = {"train": ds, "val": ds, "test": ds}
    if record is not None:
        out["preprocess"] = record
    if classes is not None:
        out["classes"] = classes
    if extra:
        out["labels"] = [0, 1]
    return out
'''
REC = {"color": "rgb", "size": [8, 8], "resize": "stretch", "scale": 1 / 255,
       "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}


@pytest.fixture()
def factory(tmp_path, monkeypatch):
    (tmp_path / "recfactory.py").write_text(FACTORY)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "recfactory:build"
    sys.modules.pop("recfactory", None)


def test_python_factory_returns_or_yaml_states_the_record(factory):
    d = load_data(DataConfig(source="python", python=factory,
                             kwargs={"record": REC, "classes": ["a", "b"]}))
    assert d.info.preprocess == ImagePreprocess(**REC) and d.info.class_names == ["a", "b"]
    bare = load_data(DataConfig(source="python", python=factory))
    assert bare.info.preprocess is None and bare.info.source == f"python: {factory}"
    stated = load_data(DataConfig(source="python", python=factory, preprocess=REC))
    assert stated.info.preprocess == ImagePreprocess(**REC)
    # a factory's class names state the count, beyond the labels the data holds
    wide = load_data(DataConfig(source="python", python=factory, kwargs={"classes": list("abcde")}))
    assert (wide.num_classes, wide.info.max_label, wide.info.class_names) == (5, 1, list("abcde"))


@pytest.mark.parametrize("kwargs,yaml,message", [
    ({"record": {**REC, "mean": [0.5]}}, None, "returned a preprocess record that is not valid "
     "(Value error, mean and std need one value per channel (3 for rgb), got 1 and 3)"),
    ({"record": REC}, {**REC, "scale": 1.0}, "data.preprocess: differs from the record "),
    ({"classes": ["a"]}, None, "returned 1 class names, but the data has label 1; give a name "
     "for every class up to it"),
    ({"extra": True}, None, "returned unknown keys ['labels']"),
])
def test_python_factory_record_errors(factory, kwargs, yaml, message):
    with pytest.raises(InputError) as e:
        load_data(DataConfig(source="python", python=factory, kwargs=kwargs, preprocess=yaml))
    assert message in str(e.value)
