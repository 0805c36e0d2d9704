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
from compress.config.preprocess import ImagePreprocess, Preprocess, TextPreprocess
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
    """What the data says about the model: input shapes, classes, and the preprocessing.

    ``preprocess`` is the typed record every bundle ships (None: the source could not say, and
    the package stage refuses, naming what is missing); ``preprocessing`` holds facts about the
    data for the report (corpus, sentence count, median tokens); ``tokenizer_dir`` is where a
    text source's tokenizer files are read from."""

    input_shape: tuple[int, ...] | None  # one sample of the single image input, when there is one
    num_classes: int | None
    preprocessing: dict[str, Any] = field(default_factory=dict)
    preprocess: Preprocess | None = None
    tokenizer_dir: Path | None = None
    source: str = ""  # the source in words, for messages: "digits", "python: pkg.mod:fn", ...
    class_names: list[str] | None = None  # index = class id (digits, folder names, a factory's)
    max_label: int | None = None  # the largest label in train, val and test (None: not labels)


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
    probe: Any = None  # data.probe: a compress.tasks.probe.ProbeSet (embedding's linear probe)

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


def load_data(cfg: DataConfig, seed: int = 0, teacher_classes: int | None = None) -> DataBundle:
    """Load and split the data named by ``cfg`` (YAML path ``data``). ``teacher_classes``: an
    ONNX teacher's output width, the class count when neither ``data.num_classes`` nor a
    factory's ``classes`` states one (so a student scores every class its teacher does)."""
    record: Preprocess | None
    classes = None
    if cfg.lm is not None:  # task causal-lm: token windows of running text
        from compress.data.lm_text import lm_data

        windows, facts = lm_data(cfg)
        info = DataInfo(None, None, facts, source="text: " + ", ".join(facts["sources"]))
        return DataBundle(*windows, None, info, cfg.batch_size)
    if cfg.source == "text" and (cfg.corpus or cfg.holdout or cfg.labels or cfg.probe):
        from compress.data.corpus_split import text_data  # the built-in corpus and labelled set

        t = text_data(cfg, seed, _text_eval_set)
        info = DataInfo(None, t.num_classes, t.prep, t.preprocess, t.tokenizer_dir,
                        class_names=t.prep.get("label_names"))
        return DataBundle(t.train, t.val, t.test, t.transfer, info, cfg.batch_size, 0, t.extra,
                          probe=t.probe)
    if cfg.source == "python":
        train, val, test, record, classes = _python_split(cfg, seed)
        prep: dict[str, Any] = {"source": "python", "python": cfg.python}
    elif cfg.source == "text":
        train, val, test, prep, extra, text_info = _text_split(cfg, seed)
    else:
        x, y, record = _arrays(cfg, "data")
        train, val, test = _stratified(x, y, cfg.val_fraction, cfg.test_fraction, seed)
        prep = {"source": cfg.source}
    if cfg.source != "text":
        record = cfg.preprocess if cfg.preprocess is not None else record
    transfer = _unlabeled(cfg.transfer) if cfg.transfer is not None else None
    if min(len(train), len(val), len(test)) == 0:
        raise InputError(f"data: needs samples in every split (train {len(train)}, val {len(val)}, "
                         f"test {len(test)})")
    inputs0, _ = train[0]
    single = len(inputs0) == 1 and next(iter(inputs0.values())).is_floating_point()
    if cfg.source == "text":
        return DataBundle(train, val, test, None, DataInfo(None, None, prep, *text_info),
                          cfg.batch_size, 0, extra)
    shape = tuple(next(iter(inputs0.values())).shape) if single else None
    max_label = _max_label(train, val, test)
    num_classes = _count(cfg, max_label, classes, teacher_classes)
    if transfer is not None and shape is not None and tuple(transfer[0][0][INPUT].shape) != shape:
        raise InputError(
            f"data.transfer: inputs have shape {list(transfer[0][0][INPUT].shape)}, "
            f"the training data {list(shape)}"
        )
    info = DataInfo(shape, num_classes, prep, record, source=_describe(cfg, train),
                    class_names=_class_names(cfg, num_classes, classes), max_label=max_label)
    extra = {e.name: _python_eval_set(e, i) for i, e in enumerate(cfg.eval_sets)}
    return DataBundle(train, val, test, transfer, info, cfg.batch_size, cfg.augment_shift, extra)


def load_data_guarded(cfg: DataConfig, seed: int, teacher_classes: int | None = None) -> DataBundle:
    """``load_data`` as the engine calls it: seeded on its own, and a user's factory that fails
    is an input error naming it (exit 2), not a traceback."""
    from compress.common.device import seed_everything, stage_seed

    seed_everything(stage_seed(seed, "data"))
    try:
        return load_data(cfg, seed, teacher_classes)
    except CompressError:
        raise
    except Exception as e:  # noqa: BLE001 - a user's data factory failed: name it, no traceback
        raise InputError(f"data: loading failed: {type(e).__name__}: {e}") from e


def _count(cfg: DataConfig, max_label: int | None, classes: list | None,
           teacher_classes: int | None) -> int | None:
    """The class count: ``data.num_classes``, else the factory's class names, else the ONNX
    teacher's width, else the largest label + 1; a label at or above a stated count is refused."""
    if max_label is None:
        return cfg.num_classes
    if cfg.num_classes is not None and classes is not None and len(classes) != cfg.num_classes:
        raise InputError(f"data.python: {cfg.python} returned {len(classes)} class names for "
                         f"data.num_classes: {cfg.num_classes}")
    if cfg.num_classes is not None and max_label >= cfg.num_classes:
        raise InputError(f"data.num_classes: the data has label {max_label}, at or above the "
                         f"{cfg.num_classes} classes stated; set data.num_classes: {max_label + 1} "
                         "or more")
    if cfg.num_classes is None and classes is not None and max_label >= len(classes):
        raise InputError(f"data.python: {cfg.python} returned {len(classes)} class names, but the "
                         f"data has label {max_label}; give a name for every class up to it")
    if cfg.num_classes is not None:
        return cfg.num_classes
    if classes is not None:
        return len(classes)
    return teacher_classes or max_label + 1


def _class_names(cfg: DataConfig, num_classes: int | None,
                 given: list[str] | None) -> list[str] | None:
    if given is not None:
        return [str(c) for c in given]
    if num_classes is None:
        return None
    if cfg.source == "digits":
        names = [str(i) for i in range(10)]
    elif cfg.source == "image_folder":
        names = sorted(p.name for p in Path(cfg.path).iterdir() if p.is_dir())
    else:
        return None
    return names + [str(i) for i in range(len(names), num_classes)]  # classes the data lacks: ids


def _describe(cfg: DataConfig, train: Dataset) -> str:
    if cfg.source == "python":
        return f"python: {cfg.python}"
    if cfg.source == "npz" and isinstance(train, NamedDataset):
        x = train.inputs[INPUT]
        return (f"npz {cfg.path}:{cfg.x_key}, values {float(x.min()):.4g}..{float(x.max()):.4g}, "
                "not 8-bit pixels")
    return f"{cfg.source}" + (f" {cfg.path}" if cfg.path else "")


def _text_split(cfg: DataConfig, seed: int):
    """Sentences (a file, or the built-in corpus) split at random with the seed, tokenized with
    the teacher's tokenizer and truncated to ``max_length`` tokens (padded per batch later)."""
    from compress.data.text import TextDataset, pydoc_sentences, read_lines, split_sentences
    from compress.models.hf import load_tokenizer, resolve_hf_dir

    if cfg.path is not None:
        sentences, corpus = read_lines(cfg.path), str(cfg.path)
    else:
        sentences, corpus = pydoc_sentences(docstrings=True), "built-in: pydoc topics + docstrings"
    from compress.models.hf import TOKENIZER_FILES

    tok_dir = resolve_hf_dir(cfg.tokenizer, "data.tokenizer")
    tokenizer = load_tokenizer(tok_dir)
    parts = split_sentences(sentences, cfg.val_fraction, cfg.test_fraction, seed)
    train, val, test = (TextDataset(p, tokenizer, cfg.max_length) for p in parts)
    extra = {e.name: _text_eval_set(e, tokenizer, cfg.max_length) for e in cfg.eval_sets}
    lengths = sorted(len(test[i][0]["input_ids"]) for i in range(len(test)))
    prep = {"kind": "text", "corpus": corpus, "sentences": len(sentences),
            "max_length": cfg.max_length, "median_tokens": lengths[len(lengths) // 2]}
    record = TextPreprocess(
        tokenizer_files=[n for n in TOKENIZER_FILES if (Path(tok_dir) / n).is_file()],
        max_length=cfg.max_length, padding="longest",
        note="the teacher's tokenizer, truncated to max_length; training padded per batch to its "
             "longest sentence (right, attention_mask 0 on padding)")
    return train, val, test, prep, extra, (record, Path(tok_dir))


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


def _max_label(*splits: Dataset) -> int | None:
    labels = []
    for ds in splits:
        for i in range(len(ds)):
            t = ds[i][1]
            if not (isinstance(t, torch.Tensor) and t.ndim == 0 and not t.is_floating_point()):
                return None  # targets are not class labels (e.g. vectors)
            labels.append(int(t))
    return max(labels) if labels else None


def _arrays(cfg: _Source, where: str) -> tuple[torch.Tensor, torch.Tensor, ImagePreprocess | None]:
    """Inputs, labels and the preprocessing record of a built-in image source."""
    from compress.data import images

    if cfg.source == "digits":
        return (*images.digits(cfg.image_size), images.digits_record(cfg.image_size))
    if cfg.source == "npz":
        x, y = images.npz(cfg, where)
        return x, y, images.npz_record(x.numpy())
    x, y = images.image_folder(cfg, where)
    return x, y, images.folder_record(cfg.image_size, cfg.channels)


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
    """The factory's splits, the preprocessing record and class names it returns, if any: a
    ``{'train', 'val'[, 'test', 'preprocess', 'classes']}`` dict, or a dataset with
    ``preprocess`` and ``classes`` attributes (the record an ``ImagePreprocess`` or a mapping)."""
    out = import_callable(cfg.python, "data.python")(**cfg.kwargs)
    if isinstance(out, dict) and {"train", "val"} <= set(out):
        unknown = sorted(set(out) - {"train", "val", "test", "preprocess", "classes"})
        if unknown:
            raise InputError(f"data.python: {cfg.python} returned unknown keys {unknown} "
                             "(expected train, val, test, preprocess, classes)")
        record, classes = _factory_record(out.get("preprocess"), cfg), out.get("classes")
        train, val = _Named(_as_dataset(out["train"])), _Named(_as_dataset(out["val"]))
        if "test" in out:
            return train, val, _Named(_as_dataset(out["test"])), record, classes
        # no test split given: hold out part of train, so nothing reported is chosen on val
        n_test = max(1, int(len(train) * cfg.test_fraction))
        perm = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed)).tolist()
        return Subset(train, perm[n_test:]), val, Subset(train, perm[:n_test]), record, classes
    ds = _Named(_as_dataset(out))
    record = _factory_record(getattr(ds.base, "preprocess", None), cfg)
    classes = getattr(ds.base, "classes", None)
    n_val, n_test = max(1, int(len(ds) * cfg.val_fraction)), max(1, int(len(ds) * cfg.test_fraction))
    perm = torch.randperm(len(ds), generator=torch.Generator().manual_seed(seed)).tolist()
    return (Subset(ds, perm[n_val + n_test:]), Subset(ds, perm[:n_val]),
            Subset(ds, perm[n_val:n_val + n_test]), record, classes)


def _factory_record(raw: Any, cfg: DataConfig) -> Preprocess | None:
    """A factory's record, checked; one stated in the YAML as well must agree with it."""
    from pydantic import ValidationError

    if raw is None:
        return None
    try:
        if isinstance(raw, ImagePreprocess | TextPreprocess):
            record = raw
        else:
            raw = dict(raw)
            kind = TextPreprocess if raw.get("kind") == "text" else ImagePreprocess
            record = kind.model_validate(raw)
    except (ValidationError, TypeError, ValueError) as e:
        first = e.errors()[0] if isinstance(e, ValidationError) else {"loc": (), "msg": str(e)}
        where = ".".join(str(p) for p in first["loc"])
        raise InputError(f"data.python: {cfg.python} returned a preprocess record that is not "
                         f"valid ({where + ': ' if where else ''}{first['msg']})") from None
    if cfg.preprocess is not None and cfg.preprocess != record:
        raise InputError(f"data.preprocess: differs from the record {cfg.python} returns; "
                         "state it in one place")
    return record


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
    x = _arrays(cfg, "data.transfer")[0]
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
