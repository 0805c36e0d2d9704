"""Data sources: digits, npz, image folders, python factories, unlabeled transfer sets."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from compress.data.sources import UNLABELED, DataConfig, TransferConfig, load_data, with_transfer
from compress.errors import InputError


def test_digits_split_is_stratified_and_fixed():
    a, b = load_data(DataConfig(), seed=0), load_data(DataConfig(), seed=0)
    assert (len(a.train), len(a.val), len(a.test)) == (1077, 360, 360)
    assert (a.input_shape, a.num_classes) == ((1, 32, 32), 10)
    for split in (a.val, a.test):
        counts = np.bincount([int(split[i][1]) for i in range(len(split))])
        assert counts.min() >= 35 and counts.max() <= 37  # ~36 per class: stratified
    assert torch.equal(a.test.inputs["input"], b.test.inputs["input"])
    x = a.train.inputs["input"]
    assert float(x.min()) >= -1.0 and float(x.max()) <= 1.0
    # the three splits are disjoint: no test image was seen in training or selection
    rows = {split: {t.numpy().tobytes() for t in getattr(a, split).inputs["input"]}
            for split in ("train", "val", "test")}
    assert not (rows["test"] & rows["train"]) and not (rows["test"] & rows["val"])


def test_split_fractions_must_leave_training_data():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="must leave at least 10% for training"):
        DataConfig(val_fraction=0.5, test_fraction=0.45)


def test_npz_source(tmp_path):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(50, 12, 12)).astype(np.float32), np.repeat(np.arange(5), 10)
    np.savez(tmp_path / "d.npz", images=x, labels=y)
    d = load_data(DataConfig(source="npz", path=tmp_path / "d.npz", x_key="images", y_key="labels"))
    assert (len(d.train), len(d.val), len(d.test), d.input_shape, d.num_classes) == (30, 10, 10, (1, 12, 12), 5)


@pytest.mark.parametrize("arrays,key,message", [
    ({"x": np.zeros((4, 2, 2, 2, 2))}, "x_key", "data.x_key: expected (N, C, H, W) or (N, H, W), got shape [4, 2, 2, 2, 2]"),
    ({"x": np.zeros((4, 1, 2, 2))}, "y_key", "data.y_key: "),
    ({"x": np.zeros((4, 1, 2, 2)), "y": np.array([0.5, 1, 2, 3])}, "y_key",
     "data.y_key: expected 4 non-negative integer labels, got shape [4] of float64"),
])
def test_npz_errors_name_the_key(tmp_path, arrays, key, message):
    np.savez(tmp_path / "d.npz", **arrays)
    with pytest.raises(InputError) as e:
        load_data(DataConfig(source="npz", path=tmp_path / "d.npz"))
    assert str(e.value).startswith(message)


def test_corrupt_npz(tmp_path):
    (tmp_path / "d.npz").write_bytes(b"garbage")
    with pytest.raises(InputError, match=r"data.path: cannot read .*d.npz as .npz"):
        load_data(DataConfig(source="npz", path=tmp_path / "d.npz"))


def test_image_folder(tmp_path):
    from PIL import Image

    for c, value in (("cat", 30), ("dog", 220)):
        (tmp_path / c).mkdir()
        for i in range(10):
            Image.fromarray(np.full((20, 20, 3), value + i, np.uint8)).save(tmp_path / c / f"{i}.png")
    d = load_data(DataConfig(source="image_folder", path=tmp_path, image_size=8, channels=3))
    assert (d.input_shape, d.num_classes, len(d.train) + len(d.val) + len(d.test)) == ((3, 8, 8), 2, 20)
    x, y = d.arrays("val")
    # dark images are class 0 (cat), bright ones class 1 (dog)
    assert np.all((x.mean(axis=(1, 2, 3)) > 0) == (y == 1))


def test_python_factory_and_transfer(tmp_path, monkeypatch):
    (tmp_path / "mydata.py").write_text(
        "import torch\nfrom torch.utils.data import TensorDataset, DataLoader\n"
        "def build(n=30):\n"
        "    g = torch.Generator().manual_seed(0)\n"
        "    x = torch.randn(n, 1, 6, 6, generator=g)\n"
        "    return DataLoader(TensorDataset(x, torch.arange(n) % 3), batch_size=4)\n"
        "def unlabeled():\n"
        "    return TensorDataset(torch.randn(7, 1, 6, 6))\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    cfg = DataConfig(source="python", python="mydata:build", kwargs={"n": 30}, val_fraction=0.2,
                     transfer=TransferConfig(source="python", python="mydata:unlabeled"))
    d = load_data(cfg)
    assert (len(d.train), len(d.val), len(d.test), d.num_classes, len(d.transfer)) == (18, 6, 6, 3, 7)
    assert d.transfer[0][1] == UNLABELED
    mixed = with_transfer(d.train, d.transfer, use_labels=False)
    labels = [int(mixed[i][1]) for i in range(len(mixed))]
    assert len(mixed) == 18 + 7 and set(labels) == {UNLABELED}
    sys.modules.pop("mydata", None)


def test_transfer_shape_mismatch(tmp_path):
    np.savez(tmp_path / "t.npz", x=np.zeros((5, 1, 8, 8), np.float32))
    cfg = DataConfig(transfer=TransferConfig(source="npz", path=tmp_path / "t.npz"))
    with pytest.raises(InputError) as e:
        load_data(cfg)
    assert str(e.value) == "data.transfer: inputs have shape [1, 8, 8], the training data [1, 32, 32]"


def test_python_factory_bad_return(tmp_path, monkeypatch):
    (tmp_path / "baddata.py").write_text("def build():\n    return 42\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(InputError) as e:
        load_data(DataConfig(source="python", python="baddata:build"))
    assert str(e.value) == "data.python: expected a Dataset, a DataLoader or {'train', 'val'[, 'test']} of them, got int"
    with pytest.raises(InputError, match="data.python: cannot import module 'nosuchmod'"):
        load_data(DataConfig(source="python", python="nosuchmod:build"))
