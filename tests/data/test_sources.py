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


@pytest.fixture()
def sparse_labels(tmp_path, monkeypatch):
    """A factory whose 36 samples hold three classes of a 1000-class set: labels 1, 500, 998."""
    (tmp_path / "sparse.py").write_text(
        "import torch\nfrom torch.utils.data import TensorDataset\n"
        "def build(classes=None):\n"
        "    x = torch.randn(36, 1, 6, 6, generator=torch.Generator().manual_seed(0))\n"
        "    ds = TensorDataset(x, torch.tensor([1, 500, 998] * 12))\n"
        "    if classes:\n"
        "        ds.classes = [f'c{i}' for i in range(classes)]\n"
        "    return ds\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "sparse:build"
    sys.modules.pop("sparse", None)


def test_the_class_count_is_stated_or_taken_from_the_teacher(sparse_labels):
    def count(teacher=None, **kw):
        d = load_data(DataConfig(source="python", python=sparse_labels, **kw), teacher_classes=teacher)
        return d.num_classes, d.info.max_label

    assert count() == (999, 998)  # nothing says more: the largest label + 1, as before
    assert count(teacher=1000) == (1000, 998)  # an ONNX teacher's width
    assert count(num_classes=1000) == (1000, 998)  # the key
    assert count(kwargs={"classes": 1000}) == (1000, 998)  # the factory's class names
    assert count(teacher=1000, num_classes=1200) == (1200, 998)  # stated wins (the teacher check refuses it)
    with pytest.raises(InputError) as e:
        count(num_classes=3)
    assert str(e.value) == ("data.num_classes: the data has label 998, at or above the 3 classes "
                            "stated; set data.num_classes: 999 or more")
    with pytest.raises(InputError) as e:
        count(num_classes=1000, kwargs={"classes": 999})
    assert str(e.value) == ("data.python: sparse:build returned 999 class names for "
                            "data.num_classes: 1000")


def test_an_unset_class_count_leaves_the_data_dump_as_it_was():
    """Resume keys hash data.model_dump(): a config without the key hashes as before it existed."""
    from pydantic import ValidationError

    from compress.common.files import sha256_json

    assert "num_classes" not in DataConfig().model_dump(mode="json")
    assert DataConfig(num_classes=1000).model_dump(mode="json")["num_classes"] == 1000
    # every other field is dumped as pydantic dumps it, so the hash is the one before the key
    plain = DataConfig.model_fields.keys() - {"num_classes", "lm"}  # lm: task causal-lm's, alike
    assert set(DataConfig(image_size=16).model_dump(mode="json")) == plain
    assert "lm" in DataConfig(source="text", lm={}).model_dump(mode="json")
    assert sha256_json(DataConfig(image_size=16).model_dump(mode="json")) == sha256_json(
        {k: v for k, v in DataConfig(image_size=16, num_classes=5).model_dump(mode="json").items()
         if k != "num_classes"})
    with pytest.raises(ValidationError, match="greater than or equal to 2"):
        DataConfig(num_classes=1)
    with pytest.raises(ValidationError, match="num_classes: applies to image data"):
        DataConfig(source="text", num_classes=3)
