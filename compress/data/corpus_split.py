"""The text data of a run from the built-in corpus and the labelled set: tokenized train / val /
test splits, the unlabeled transfer text, the out-of-domain eval sets (whole held-out sources),
the linear-probe set, and the records for the report and the bundle."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from compress.data.corpus import (
    LABEL_NAMES,
    CorpusRecord,
    SourceRecord,
    build_corpus,
    movie_reviews,
)

if TYPE_CHECKING:
    from compress.config.data import DataConfig

class Labelled:
    """A tokenized ``TextDataset`` whose items carry class labels: ``(inputs, label)``."""

    def __init__(self, base: Any, labels: Sequence[int]):
        self.base, self.labels = base, [int(y) for y in labels]
        self.sentences = base.sentences

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int):
        import torch

        return self.base[i][0], torch.tensor(self.labels[i])


@dataclass
class TextData:
    """What ``compress.data.sources.load_data`` makes a ``DataBundle`` of."""

    train: Any
    val: Any
    test: Any
    transfer: Any
    extra: dict[str, Any]
    prep: dict[str, Any]  # facts for the report: the corpus record among them
    preprocess: Any  # the TextPreprocess record the bundle ships
    tokenizer_dir: Path
    num_classes: int | None
    probe: Any  # a compress.tasks.probe.ProbeSet, or None


def _cut(n: int, val_fraction: float, test_fraction: float, seed: int) -> tuple[list, list, list]:
    """Index lists ``(train, val, test)`` of a seeded shuffle (the same rule as sentences)."""
    from compress.data.text import split_sentences

    return split_sentences(list(range(n)), val_fraction, test_fraction, seed)


def _labelled_parts(cfg: DataConfig, tokenizer: Any, seed: int) -> tuple[list, SourceRecord]:
    from compress.data.text import TextDataset

    texts, labels, rec = movie_reviews(cfg.max_sentences, seed)
    parts = []
    for idx in _cut(len(texts), cfg.val_fraction, cfg.test_fraction, seed):
        parts.append(Labelled(TextDataset([texts[i] for i in idx], tokenizer, cfg.max_length),
                              [labels[i] for i in idx]))
    return parts, rec


def _probe(cfg: DataConfig, tokenizer: Any, seed: int) -> tuple[Any, SourceRecord]:
    from compress.data.text import TextDataset
    from compress.tasks.probe import ProbeSet

    texts, labels, rec = movie_reviews(cfg.probe_sentences, seed, "data.probe")
    rec.role = "probe"
    fit, _, score = _cut(len(texts), 0.0, 0.3, seed)
    sets = [(TextDataset([texts[i] for i in idx], tokenizer, cfg.max_length),
             [labels[i] for i in idx]) for idx in (fit, score)]
    return ProbeSet(cfg.probe, sets[0][0], sets[0][1], sets[1][0], sets[1][1], LABEL_NAMES), rec


def _sentences(cfg: DataConfig, seed: int) -> tuple[list[str], dict[str, list[str]], CorpusRecord | str]:
    from compress.data.text import pydoc_sentences, read_lines

    if cfg.corpus is not None or cfg.holdout:
        c = build_corpus(cfg.corpus or [], cfg.max_sentences, cfg.holdout, cfg.holdout_sentences, seed)
        return c.sentences, c.held_out, c.record
    if cfg.path is not None:
        return read_lines(cfg.path), {}, str(cfg.path)
    return pydoc_sentences(docstrings=True), {}, "built-in: pydoc topics + docstrings"


def text_data(cfg: DataConfig, seed: int, eval_set: Callable[[Any, Any, int], Any]) -> TextData:
    """Tokenized splits of the labelled set (``cfg.labels``; the corpus, if named, becomes the
    unlabeled transfer text) or of the corpus sentences, plus the out-of-domain sets, the probe
    and the records. ``eval_set(entry, tokenizer, max_length)`` reads one ``data.eval_sets``
    entry."""
    from compress.config.preprocess import TextPreprocess
    from compress.data.text import TextDataset, split_sentences
    from compress.models.hf import TOKENIZER_FILES, load_tokenizer, resolve_hf_dir
    from compress.tasks.base import UNLABELED

    tok_dir = resolve_hf_dir(cfg.tokenizer, "data.tokenizer")
    tokenizer = load_tokenizer(tok_dir)
    if cfg.labels is not None and cfg.corpus is None and not cfg.holdout:
        sentences, held_out, record = [], {}, None  # labelled text alone: no corpus to read
    else:
        sentences, held_out, record = _sentences(cfg, seed)
    transfer, extra, num_classes, probe, labelled = None, {}, None, None, []
    if cfg.labels is not None:
        (train, val, test), rec = _labelled_parts(cfg, tokenizer, seed)
        labelled, num_classes = [rec], len(LABEL_NAMES)
        if cfg.corpus is not None:
            transfer = Labelled(TextDataset(sentences, tokenizer, cfg.max_length),
                                [UNLABELED] * len(sentences))
    else:
        parts = split_sentences(sentences, cfg.val_fraction, cfg.test_fraction, seed)
        train, val, test = (TextDataset(p, tokenizer, cfg.max_length) for p in parts)
    if cfg.probe is not None:
        probe, rec = _probe(cfg, tokenizer, seed)
        labelled.append(rec)
    for name, held in held_out.items():
        extra[f"ood-{name}"] = TextDataset(held, tokenizer, cfg.max_length)
    extra.update({e.name: eval_set(e, tokenizer, cfg.max_length) for e in cfg.eval_sets})
    if isinstance(record, CorpusRecord):
        record.sources += labelled
    elif labelled:
        record = CorpusRecord(labelled, len(sentences), None, seed,
                              {"corpus": record} if record is not None else {})
    lengths = sorted(len(test[i][0]["input_ids"]) for i in range(len(test)))
    prep = {"kind": "text", "corpus": record.to_dict() if isinstance(record, CorpusRecord) else record,
            "sentences": len(train) + len(val) + len(test), "max_length": cfg.max_length,
            "median_tokens": lengths[len(lengths) // 2]}
    if num_classes is not None:
        prep["label_names"] = list(LABEL_NAMES)
    files = [n for n in TOKENIZER_FILES if (Path(tok_dir) / n).is_file()]
    pre = TextPreprocess(tokenizer_files=files, max_length=cfg.max_length, padding="longest",
                         note="the teacher's tokenizer, truncated to max_length; training padded "
                              "per batch to its longest sentence (right, attention_mask 0 on padding)")
    return TextData(train, val, test, transfer, extra, prep, pre, Path(tok_dir), num_classes, probe)
