"""Text data for embedding models: real English sentences that ship with CPython, user text
files, deterministic splits, and a tokenized dataset.

Items of :class:`TextDataset` are ``({"input_ids": LongTensor[L], "attention_mask":
LongTensor[L]}, 0)``: unpadded, so a task's collate pads each batch only to its longest sentence.
"""

from __future__ import annotations

import importlib
import inspect
import re
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from compress.errors import InputError

if TYPE_CHECKING:
    import torch

# Standard-library modules whose docstrings are prose (imported, never executed beyond import).
STDLIB_MODULES = (
    "abc", "argparse", "ast", "asyncio", "base64", "bisect", "calendar", "codecs", "collections",
    "concurrent.futures", "configparser", "contextlib", "copy", "csv", "dataclasses", "datetime",
    "decimal", "difflib", "doctest", "email.message", "enum", "fractions", "ftplib", "functools",
    "gettext", "gzip", "hashlib", "heapq", "hmac", "html.parser", "http.client", "http.server",
    "imaplib", "importlib", "inspect", "io", "ipaddress", "itertools", "json", "locale", "logging",
    "mailbox", "multiprocessing", "numbers", "operator", "optparse", "os", "pathlib", "pdb",
    "pickle", "pkgutil", "platform", "poplib", "pprint", "queue", "random", "re", "sched",
    "selectors", "shlex", "shutil", "smtplib", "socket", "socketserver", "sqlite3", "ssl",
    "statistics", "string", "subprocess", "tarfile", "tempfile", "textwrap", "threading",
    "timeit", "tokenize", "trace", "traceback", "types", "typing", "unittest", "urllib.parse",
    "urllib.request", "uuid", "warnings", "wave", "weakref", "xml.dom.minidom",
    "xml.etree.ElementTree", "zipfile", "zoneinfo",
)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"'(])")
_CODE_LINE = re.compile(r"^\s*(>>>|\.\.\.|\$ |[A-Za-z_][\w.]*\s*::=)")


def _paragraphs(text: str) -> Iterable[str]:
    """Prose paragraphs of reStructuredText-like text: code, grammar and headings skipped."""
    for block in re.split(r"\n\s*\n", text):
        lines = [ln for ln in block.splitlines() if ln.strip()]
        if not lines or any(_CODE_LINE.match(ln) for ln in lines):
            continue
        if all(set(ln.strip()) <= set("*=-~^#") for ln in lines[1:2]):  # a heading
            continue
        yield " ".join(ln.strip() for ln in lines)


def _sentences(text: str, min_chars: int, max_chars: int) -> Iterable[str]:
    for para in _paragraphs(text):
        for s in _SENTENCE_END.split(para):
            s = s.strip()
            if not min_chars <= len(s) <= max_chars or s[-1] not in ".!?" or not s[0].isupper():
                continue
            prose = sum(c.isalpha() or c.isspace() for c in s) / len(s)
            if prose >= 0.8:
                yield s


def _unique(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))


def pydoc_sentences(min_chars: int = 40, max_chars: int = 300,
                    docstrings: bool = False) -> list[str]:
    """English sentences from Python's own documentation (``pydoc_data.topics``), de-duplicated,
    in a fixed order. ``docstrings=True`` appends sentences from the docstrings of
    :data:`STDLIB_MODULES` (about 2.5x more text; it depends on the Python version)."""
    from pydoc_data.topics import topics

    found = [s for key in sorted(topics) for s in _sentences(topics[key], min_chars, max_chars)]
    if docstrings:
        found += stdlib_sentences(min_chars, max_chars)
    return _unique(found)


def _docstrings(module: Any) -> Iterable[str]:
    yield inspect.getdoc(module) or ""
    for name, obj in sorted(vars(module).items()):
        if name.startswith("_") or getattr(obj, "__module__", None) != module.__name__:
            continue
        yield inspect.getdoc(obj) or ""
        if inspect.isclass(obj):
            for _, member in sorted(vars(obj).items()):
                if inspect.isfunction(member) and not member.__name__.startswith("_"):
                    yield inspect.getdoc(member) or ""


def stdlib_sentences(min_chars: int = 40, max_chars: int = 300,
                     modules: Sequence[str] = STDLIB_MODULES) -> list[str]:
    """Sentences from the docstrings of standard-library ``modules`` (those that import)."""
    found: list[str] = []
    for name in modules:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                module = importlib.import_module(name)
        except ImportError:  # optional C modules (e.g. _sqlite3) may be missing from a build
            continue
        for doc in _docstrings(module):
            found.extend(_sentences(doc, min_chars, max_chars))
    return _unique(found)


def read_lines(path: str | Path) -> list[str]:
    """The non-blank lines of a UTF-8 text file, stripped: one sentence a line.

    Raises:
        InputError: missing, unreadable, not UTF-8, or without any sentence.
    """
    path = Path(path)
    expect = "expected a UTF-8 text file, one sentence a line"
    if not path.is_file():
        raise InputError(f"{path}: no such file ({expect})")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise InputError(f"{path}: not UTF-8 text at byte {e.start} ({expect})") from e
    except OSError as e:
        raise InputError(f"{path}: cannot read ({e.strerror}; {expect})") from e
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if not lines:
        raise InputError(f"{path}: no sentences ({expect})")
    return lines


def split_sentences(sentences: Sequence[str], val_fraction: float, test_fraction: float,
                    seed: int = 0) -> tuple[list[str], list[str], list[str]]:
    """``(train, val, test)``: a seeded shuffle cut by fractions (each rounded, at least one
    sentence when its fraction is above zero).

    Raises:
        InputError: fractions outside [0, 1) or nothing left to train on.
    """
    import numpy as np

    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1):
        raise InputError(f"val_fraction and test_fraction must be in [0, 1) "
                         f"(got {val_fraction}, {test_fraction})")
    n = len(sentences)
    order = np.random.default_rng(seed).permutation(n)
    n_val = max(1, round(n * val_fraction)) if val_fraction > 0 else 0
    n_test = max(1, round(n * test_fraction)) if test_fraction > 0 else 0
    if n - n_val - n_test < 1:
        raise InputError(f"{n} sentences leave none to train on after {n_val} for validation "
                         f"and {n_test} for test")
    pick = [sentences[i] for i in order]
    return pick[n_val + n_test:], pick[:n_val], pick[n_val:n_val + n_test]


class TextDataset:
    """Sentences tokenized once (truncated to ``max_length`` tokens, no padding).

    Args:
        sentences: the text, one sentence per item.
        tokenizer: a Hugging Face tokenizer (``compress.models.hf.load_tokenizer``).
        max_length: the longest token sequence kept, special tokens included.
    """

    def __init__(self, sentences: Sequence[str], tokenizer: Any, max_length: int = 128):
        import torch

        if max_length < 2:
            raise InputError(f"max_length must be at least 2 (got {max_length})")
        self.sentences = list(sentences)
        self.pad_id = int(tokenizer.pad_token_id or 0)
        enc = tokenizer(self.sentences, truncation=True, max_length=max_length, padding=False)
        self._ids = [torch.tensor(ids, dtype=torch.long) for ids in enc["input_ids"]]

    def __len__(self) -> int:
        return len(self._ids)

    def __getitem__(self, i: int) -> tuple[dict[str, torch.Tensor], int]:
        import torch

        ids = self._ids[i]
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}, 0
