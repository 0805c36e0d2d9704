"""Load the pipeline's data into a ``DataBundle``: train, val, test and an optional unlabeled
transfer set.

Every dataset yields ``(inputs, target)`` with ``inputs`` a dict of named tensors, so the training
loop, export and ONNX Runtime all see the same names. Unlabeled samples carry the label ``-1``; the
classification loss applies the hard-label loss only where a label exists, so a teacher can label a
transfer set through its soft targets.

Splits: ``val`` chooses (epochs, layers, thresholds); ``test`` is held out and only measured.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import ConcatDataset, DataLoader, Dataset, Subset

from compress.common.imports import import_callable
from compress.config.data import DataConfig, TransferConfig, _Source
from compress.errors import CompressError, InputError
from compress.tasks.base import UNLABELED

INPUT = "input"


class NamedDataset(Dataset):
    """Rows of named input tensors with one target each: ``({name: x[i]}, y[i])``."""

    def __init__(self, inputs: dict[str, torch.Tensor], targets: torch.Tensor):
        self.inputs, self.targets = inputs, targets

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i):
        return {k: v[i] for k, v in self.inputs.items()}, self.targets[i]


class _Named(Dataset):
    """A user dataset whose items are ``(tensor, target)``, ``(dict, target)`` or a tensor."""

    def __init__(self, base: Dataset, label: int | None = None):
        self.base, self.label = base, label

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i):
        item = self.base[i]
        x, y = (item[0], item[1]) if isinstance(item, tuple | list) and len(item) > 1 else (item, UNLABELED)
        if isinstance(x, tuple | list):
            x = x[0]
        inputs = dict(x) if isinstance(x, dict) else {INPUT: torch.as_tensor(x)}
        target = self.label if self.label is not None else y
        return inputs, torch.as_tensor(target) if not isinstance(target, torch.Tensor) else target


@dataclass
class DataInfo:
    """What the data says about the model: input shapes, classes, and the preprocessing."""

    input_shape: tuple[int, ...] | None  # one sample of the single image input, when there is one
    num_classes: int | None
    preprocessing: dict[str, Any] = field(default_factory=dict)


@dataclass
class DataBundle:
    train: Dataset
    val: Dataset
    test: Dataset
    transfer: Dataset | None
    info: DataInfo
    batch_size: int
    augment_shift: int = 0
    extra: dict[str, Dataset] = field(default_factory=dict)  # data.eval_sets, by name

    @property
    def input_shape(self) -> tuple[int, ...] | None:
        return self.info.input_shape

    @property
    def num_classes(self) -> int | None:
        return self.info.num_classes

    def example(self, batch: int = 1) -> torch.Tensor:
        """The first ``batch`` test inputs of single-input data, stacked (export, tracing)."""
        return torch.stack([self.test[i][0][INPUT] for i in range(batch)])

    def arrays(self, split: str = "val") -> tuple[np.ndarray, np.ndarray]:
        """A split of single-input data as ``(inputs, labels)`` arrays."""
        ds = self.split(split)
        xs, ys = zip(*(ds[i] for i in range(len(ds))), strict=True)
        return torch.stack([x[INPUT] for x in xs]).numpy(), np.asarray([int(y) for y in ys])

    def split(self, name: str) -> Dataset:
        return {"train": self.train, "val": self.val, "test": self.test}[name]

    def calibration(self, n: int, seed: int = 0) -> Dataset:
        """``n`` training samples (never validation or test ones) for quantization calibration."""
        g = np.random.default_rng(seed)
        idx = g.choice(len(self.train), size=min(n, len(self.train)), replace=False)
        return Subset(self.train, [int(i) for i in idx])


def make_loader(ds: Dataset, batch_size: int, shuffle: bool, seed: int = 0) -> DataLoader:
    g = torch.Generator().manual_seed(seed)
    return DataLoader(ds, batch_size=batch_size, shuffle=shuffle, generator=g, drop_last=False)


def load_data(cfg: DataConfig, seed: int = 0) -> DataBundle:
    """Load and split the data named by ``cfg`` (YAML path ``data``)."""
    if cfg.source == "python":
        train, val, test = _python_split(cfg, seed)
        prep: dict[str, Any] = {"source": "python", "python": cfg.python}
    elif cfg.source == "text":
        train, val, test, prep, extra = _text_split(cfg, seed)
    else:
        x, y = _arrays(cfg, "data")
        train, val, test = _stratified(x, y, cfg.val_fraction, cfg.test_fraction, seed)
        prep = _image_preprocessing(cfg, x)
    transfer = _unlabeled(cfg.transfer) if cfg.transfer is not None else None
    if min(len(train), len(val), len(test)) == 0:
        raise InputError(f"data: needs samples in every split (train {len(train)}, val {len(val)}, "
                         f"test {len(test)})")
    inputs0, _ = train[0]
    single = len(inputs0) == 1 and next(iter(inputs0.values())).is_floating_point()
    if cfg.source == "text":
        return DataBundle(train, val, test, None, DataInfo(None, None, prep), cfg.batch_size, 0, extra)
    shape = tuple(next(iter(inputs0.values())).shape) if single else None
    num_classes = _num_classes(train, val, test)
    if transfer is not None and shape is not None and tuple(transfer[0][0][INPUT].shape) != shape:
        raise InputError(
            f"data.transfer: inputs have shape {list(transfer[0][0][INPUT].shape)}, "
            f"the training data {list(shape)}"
        )
    info = DataInfo(shape, num_classes, prep)
    extra = {e.name: _python_eval_set(e, i) for i, e in enumerate(cfg.eval_sets)}
    return DataBundle(train, val, test, transfer, info, cfg.batch_size, cfg.augment_shift, extra)


def load_data_guarded(cfg: DataConfig, seed: int) -> DataBundle:
    """``load_data`` as the engine calls it: seeded on its own, and a user's factory that fails
    is an input error naming it (exit 2), not a traceback."""
    from compress.common.device import seed_everything, stage_seed

    seed_everything(stage_seed(seed, "data"))
    try:
        return load_data(cfg, seed)
    except CompressError:
        raise
    except Exception as e:  # noqa: BLE001 - a user's data factory failed: name it, no traceback
        raise InputError(f"data: loading failed: {type(e).__name__}: {e}") from e


def _text_split(cfg: DataConfig, seed: int):
    """Sentences (a file, or the built-in corpus) split at random with the seed, tokenized with
    the teacher's tokenizer and truncated to ``max_length`` tokens (padded per batch later)."""
    from compress.data.text import TextDataset, pydoc_sentences, read_lines, split_sentences
    from compress.models.hf import load_tokenizer, resolve_hf_dir

    if cfg.path is not None:
        sentences, corpus = read_lines(cfg.path), str(cfg.path)
    else:
        sentences, corpus = pydoc_sentences(docstrings=True), "built-in: pydoc topics + docstrings"
    tok_dir = resolve_hf_dir(cfg.tokenizer, "data.tokenizer")
    tokenizer = load_tokenizer(tok_dir)
    parts = split_sentences(sentences, cfg.val_fraction, cfg.test_fraction, seed)
    train, val, test = (TextDataset(p, tokenizer, cfg.max_length) for p in parts)
    extra = {e.name: _text_eval_set(e, tokenizer, cfg.max_length) for e in cfg.eval_sets}
    lengths = sorted(len(test[i][0]["input_ids"]) for i in range(len(test)))
    prep = {"kind": "text", "corpus": corpus, "sentences": len(sentences),
            "tokenizer_dir": str(tok_dir), "max_length": cfg.max_length,
            "padding": "right, per batch; attention_mask 1 for tokens",
            "median_tokens": lengths[len(lengths) // 2]}
    return train, val, test, prep, extra


def _text_eval_set(e, tokenizer, max_length: int) -> Dataset:
    """An extra text set, tokenized like the training text."""
    from compress.data.text import TextDataset, read_lines

    where = f"data.eval_sets[{e.name}]"
    if e.path is not None:
        sentences = read_lines(e.path)
    else:
        sentences = import_callable(e.python, f"{where}.python")(**e.kwargs)
        if not isinstance(sentences, list) or not all(isinstance(t, str) for t in sentences):
            raise InputError(f"{where}.python: expected a list of sentences (str), "
                             f"got {type(sentences).__name__}")
    return TextDataset(sentences, tokenizer, max_length)


def _python_eval_set(e, i: int) -> Dataset:
    if e.python is None:
        raise InputError(f"data.eval_sets[{i}].path: files are read for text data only; give "
                         "'python: pkg.mod:function' returning a Dataset")
    return _Named(_as_dataset(import_callable(e.python, f"data.eval_sets[{i}].python")(**e.kwargs)))


def _num_classes(*splits: Dataset) -> int | None:
    labels = []
    for ds in splits:
        for i in range(len(ds)):
            t = ds[i][1]
            if not (isinstance(t, torch.Tensor) and t.ndim == 0 and not t.is_floating_point()):
                return None  # targets are not class labels (e.g. vectors)
            labels.append(int(t))
    return max(labels) + 1 if labels else None


def _image_preprocessing(cfg: DataConfig, x: torch.Tensor) -> dict[str, Any]:
    """How raw images become model inputs, recorded where it is done (for deploy bundles)."""
    return {"layout": "NCHW", "channels": int(x.shape[1]), "image_size": cfg.image_size,
            "scale": "pixel / max_value, then (v - mean) / std", "mean": 0.5, "std": 0.5,
            "max_value": 16.0 if cfg.source == "digits" else 255.0, "source": cfg.source}


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


def _stratified(x, y, val_fraction: float, test_fraction: float, seed: int):
    """Stratified train / val / test, fixed seed: test first, then val out of the rest."""
    from sklearn.model_selection import train_test_split

    idx, labels = np.arange(len(y)), y.numpy()
    try:
        rest, te = train_test_split(idx, test_size=test_fraction, random_state=seed, stratify=labels)
        val_of_rest = val_fraction / (1 - test_fraction)
        tr, va = train_test_split(rest, test_size=val_of_rest, random_state=seed, stratify=labels[rest])
    except ValueError as e:
        raise InputError(f"data: cannot make a stratified split ({e})") from e
    return tuple(NamedDataset({INPUT: x[i]}, y[i]) for i in (tr, va, te))


def _python_split(cfg: DataConfig, seed: int):
    out = import_callable(cfg.python, "data.python")(**cfg.kwargs)
    if isinstance(out, dict) and {"train", "val"} <= set(out):
        train, val = _Named(_as_dataset(out["train"])), _Named(_as_dataset(out["val"]))
        if "test" in out:
            return train, val, _Named(_as_dataset(out["test"]))
        # no test split given: hold out part of train, so nothing reported is chosen on val
        n_test = max(1, int(len(train) * cfg.test_fraction))
        perm = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed)).tolist()
        return Subset(train, perm[n_test:]), val, Subset(train, perm[:n_test])
    ds = _Named(_as_dataset(out))
    n_val, n_test = max(1, int(len(ds) * cfg.val_fraction)), max(1, int(len(ds) * cfg.test_fraction))
    perm = torch.randperm(len(ds), generator=torch.Generator().manual_seed(seed)).tolist()
    return (Subset(ds, perm[n_val + n_test:]), Subset(ds, perm[:n_val]),
            Subset(ds, perm[n_val:n_val + n_test]))


def _as_dataset(obj) -> Dataset:
    if isinstance(obj, DataLoader):
        return obj.dataset
    if isinstance(obj, Dataset):
        return obj
    raise InputError(
        f"data.python: expected a Dataset, a DataLoader or {{'train', 'val'[, 'test']}} of them, "
        f"got {type(obj).__name__}"
    )


def _unlabeled(cfg: TransferConfig) -> Dataset:
    if cfg.source == "python":
        factory = import_callable(cfg.python, "data.transfer.python")
        return _Named(_as_dataset(factory(**cfg.kwargs)), label=UNLABELED)
    x, _ = _npz(cfg, "data.transfer") if cfg.source == "npz" else _arrays(cfg, "data.transfer")
    return NamedDataset({INPUT: x}, torch.full((len(x),), UNLABELED, dtype=torch.long))


class _Inputs(Dataset):
    """The inputs of a labeled set without its labels (KD from soft targets alone)."""

    def __init__(self, base: Dataset):
        self.base = base

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i):
        return self.base[i][0], torch.tensor(UNLABELED)


def with_transfer(train: Dataset, transfer: Dataset | None, use_labels: bool) -> Dataset:
    """The distillation training set: labeled train samples (or their inputs only) plus transfer."""
    base = train if use_labels else _Inputs(train)
    return ConcatDataset([base, transfer]) if transfer is not None else base
