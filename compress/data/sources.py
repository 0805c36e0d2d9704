"""Load the pipeline's data into a ``DataBundle``: train, val and an optional unlabeled transfer set.

Unlabeled samples carry the label ``-1``; the training loop applies the hard-label loss only where
a label exists, so a teacher can label a transfer set through its soft targets.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch.utils.data import ConcatDataset, DataLoader, Dataset, Subset, TensorDataset

from compress.errors import InputError
from compress.runtime.imports import import_callable

UNLABELED = -1


class _Source(BaseModel):
    model_config = ConfigDict(extra="forbid")

    source: Literal["digits", "npz", "image_folder", "python"] = Field(
        description="digits: scikit-learn's handwritten digits (built in); npz: arrays in a .npz "
        "file; image_folder: one subfolder per class; python: 'pkg.mod:function' returning a "
        "Dataset or DataLoader."
    )
    path: Path | None = Field(None, description="The .npz file or the image folder.")
    python: str | None = Field(None, description="'pkg.mod:function' for source: python.")
    kwargs: dict = Field(default_factory=dict, description="Keyword arguments of the factory.")
    x_key: str = Field("x", description="npz: the array of inputs (N, C, H, W) or (N, H, W).")
    y_key: str = Field("y", description="npz: the array of integer labels.")
    image_size: int = Field(32, gt=0, le=4096, description="Images are resized to this square size.")
    channels: Literal[1, 3] = Field(1, description="image_folder: 1 for grayscale, 3 for RGB.")

    @model_validator(mode="after")
    def _needs(self):
        if self.source in ("npz", "image_folder") and self.path is None:
            raise ValueError(f"source {self.source} needs 'path'")
        if self.source == "python" and not self.python:
            raise ValueError("source python needs 'python: package.module:function'")
        return self


class TransferConfig(_Source):
    """An unlabeled set for distillation: the teacher labels it with its soft targets."""


class DataConfig(_Source):
    source: Literal["digits", "npz", "image_folder", "python"] = Field(
        "digits", description=_Source.model_fields["source"].description
    )
    val_fraction: float = Field(0.2, gt=0, lt=1, description="Stratified validation split.")
    batch_size: int = Field(64, gt=0, le=65536, description="Training batch size.")
    augment_shift: int = Field(
        0, ge=0, le=16, description="Random translation in pixels during training (0: off)."
    )
    transfer: TransferConfig | None = Field(
        None, description="Optional unlabeled transfer set for distillation."
    )


@dataclass
class DataBundle:
    train: Dataset
    val: Dataset
    transfer: Dataset | None
    input_shape: tuple[int, ...]
    num_classes: int
    batch_size: int
    augment_shift: int = 0

    def example(self, batch: int = 1) -> torch.Tensor:
        return torch.stack([self.val[i][0] for i in range(batch)])

    def val_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        xs, ys = zip(*(self.val[i] for i in range(len(self.val))), strict=True)
        return torch.stack(xs).numpy(), np.asarray([int(y) for y in ys])

    def calibration(self, n: int, seed: int = 0) -> np.ndarray:
        """``n`` training inputs (never validation ones) for quantization calibration."""
        g = np.random.default_rng(seed)
        idx = g.choice(len(self.train), size=min(n, len(self.train)), replace=False)
        return torch.stack([self.train[int(i)][0] for i in idx]).numpy()


def make_loader(ds: Dataset, batch_size: int, shuffle: bool, seed: int = 0) -> DataLoader:
    g = torch.Generator().manual_seed(seed)
    return DataLoader(ds, batch_size=batch_size, shuffle=shuffle, generator=g, drop_last=False)


def load_data(cfg: DataConfig, seed: int = 0) -> DataBundle:
    """Load and split the data named by ``cfg`` (YAML path ``data``)."""
    if cfg.source == "python":
        train, val = _python_split(cfg, seed)
    else:
        x, y = _arrays(cfg, "data")
        train, val = _stratified(x, y, cfg.val_fraction, seed)
    transfer = None
    if cfg.transfer is not None:
        transfer = _unlabeled(cfg.transfer)
    if len(train) == 0 or len(val) == 0:
        raise InputError(f"data: needs samples in both splits (train {len(train)}, val {len(val)})")
    x0, _ = train[0]
    labels = [int(ds[i][1]) for ds in (train, val) for i in range(len(ds))]
    num_classes = max(labels) + 1
    if transfer is not None and tuple(transfer[0][0].shape) != tuple(x0.shape):
        raise InputError(
            f"data.transfer: inputs have shape {list(transfer[0][0].shape)}, "
            f"the training data {list(x0.shape)}"
        )
    return DataBundle(
        train, val, transfer, tuple(x0.shape), num_classes, cfg.batch_size, cfg.augment_shift
    )


def _arrays(cfg: _Source, where: str) -> tuple[torch.Tensor, torch.Tensor]:
    if cfg.source == "digits":
        return _digits(cfg.image_size)
    if cfg.source == "npz":
        return _npz(cfg, where)
    return _image_folder(cfg, where)


def _digits(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0
    if size != 8:
        x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    return (x - 0.5) / 0.5, torch.tensor(d.target, dtype=torch.long)


def _npz(cfg: _Source, where: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    path = Path(cfg.path)
    if not path.is_file():
        raise InputError(f"{where}.path: file not found: {path}")
    try:
        arrays = np.load(path, allow_pickle=False)
    except Exception as e:  # np.load raises several types for a bad file
        raise InputError(f"{where}.path: cannot read {path} as .npz ({type(e).__name__})") from e
    if cfg.x_key not in arrays:
        raise InputError(f"{where}.x_key: {path} has no array {cfg.x_key!r} (has {sorted(arrays)})")
    x = np.asarray(arrays[cfg.x_key], dtype=np.float32)
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4:
        raise InputError(f"{where}.x_key: expected (N, C, H, W) or (N, H, W), got shape {list(x.shape)}")
    y = None
    if isinstance(cfg, DataConfig):
        if cfg.y_key not in arrays:
            raise InputError(f"{where}.y_key: {path} has no array {cfg.y_key!r} (has {sorted(arrays)})")
        y = np.asarray(arrays[cfg.y_key])
        if y.shape != (x.shape[0],) or not np.issubdtype(y.dtype, np.integer) or y.min() < 0:
            raise InputError(
                f"{where}.y_key: expected {x.shape[0]} non-negative integer labels, "
                f"got shape {list(y.shape)} of {y.dtype}"
            )
        y = torch.from_numpy(y.astype(np.int64))
    return torch.from_numpy(x), y


def _image_folder(cfg: _Source, where: str) -> tuple[torch.Tensor, torch.Tensor]:
    from PIL import Image

    root = Path(cfg.path)
    if not root.is_dir():
        raise InputError(f"{where}.path: not a directory: {root}")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    files = [(f, i) for i, c in enumerate(classes) for f in sorted((root / c).iterdir()) if f.is_file()]
    if not classes or not files:
        raise InputError(f"{where}.path: {root} needs one subfolder of images per class")
    mode = "L" if cfg.channels == 1 else "RGB"
    xs = []
    for f, _ in files:
        try:
            with Image.open(f) as im:
                im = im.convert(mode).resize((cfg.image_size, cfg.image_size))
                xs.append(np.asarray(im, dtype=np.float32) / 255.0)
        except OSError as e:
            raise InputError(f"{where}.path: cannot read image {f} ({e})") from e
    x = torch.from_numpy(np.stack(xs))
    x = x.unsqueeze(1) if x.ndim == 3 else x.permute(0, 3, 1, 2)
    return (x - 0.5) / 0.5, torch.tensor([i for _, i in files], dtype=torch.long)


def _stratified(x, y, val_fraction: float, seed: int) -> tuple[Dataset, Dataset]:
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(y))
    try:
        tr, va = train_test_split(idx, test_size=val_fraction, random_state=seed, stratify=y.numpy())
    except ValueError as e:
        raise InputError(f"data: cannot make a stratified split ({e})") from e
    return TensorDataset(x[tr], y[tr]), TensorDataset(x[va], y[va])


def _python_split(cfg: DataConfig, seed: int) -> tuple[Dataset, Dataset]:
    out = import_callable(cfg.python, "data.python")(**cfg.kwargs)
    if isinstance(out, dict) and {"train", "val"} <= set(out):
        return _as_dataset(out["train"]), _as_dataset(out["val"])
    ds = _as_dataset(out)
    n_val = max(1, int(len(ds) * cfg.val_fraction))
    perm = torch.randperm(len(ds), generator=torch.Generator().manual_seed(seed)).tolist()
    return Subset(ds, perm[n_val:]), Subset(ds, perm[:n_val])


def _as_dataset(obj) -> Dataset:
    if isinstance(obj, DataLoader):
        return obj.dataset
    if isinstance(obj, Dataset):
        return obj
    raise InputError(
        f"data.python: expected a Dataset, a DataLoader or {{'train', 'val'}} of them, "
        f"got {type(obj).__name__}"
    )


class _Unlabeled(Dataset):
    def __init__(self, base: Dataset):
        self.base = base

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i):
        item = self.base[i]
        x = item[0] if isinstance(item, tuple | list) else item
        return x, UNLABELED


def _unlabeled(cfg: TransferConfig) -> Dataset:
    if cfg.source == "python":
        return _Unlabeled(_as_dataset(import_callable(cfg.python, "data.transfer.python")(**cfg.kwargs)))
    if cfg.source == "npz":
        x, _ = _npz(cfg, "data.transfer")
    else:
        x, _ = _arrays(cfg, "data.transfer")
    return TensorDataset(x, torch.full((len(x),), UNLABELED, dtype=torch.long))


def with_transfer(train: Dataset, transfer: Dataset | None, use_labels: bool) -> Dataset:
    """The distillation training set: labeled train samples (or their inputs only) plus transfer."""
    base = train if use_labels else _Unlabeled(train)
    return ConcatDataset([base, transfer]) if transfer is not None else base
