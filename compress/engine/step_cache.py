"""Finished steps kept outside a run folder, found again by their resume key: the ``StepStore``
hook, and the one kind of store the project has, a folder of finished step folders.

The engine looks for a step in the run folder first (resume); when the run folder has no finished
record of the step's key, it asks each store that serves the step's kind, and a store that holds
the step fills a fresh temp folder that is swapped in for the step's folder (``swap_in``, as a
step the run finished is). The engine's resume then checks the copy as it checks the run's own
folder (every file's hash against its stage.json) and skips the step. A step the run finished is
put back into every store that serves its kind. Two stores exist:

- the cross-run teacher cache (``teacher_cache``): a teacher trained for one ``--out`` comes out
  bit-identical in the next (same config, data, seed and device: the key covers them all), so it
  is copied instead of trained again. Where: ``--cache-dir``, else ``$COMPRESS_CACHE``, else
  ``~/.cache/compress``.
- the search's shared store (``search_store``): the trials of one search share their teacher and
  every stage before the first one they differ in. Its files are hard-linked: files in step
  folders are written once (temp file + rename) and never changed in place.

``put`` and ``fetch`` publish whole folders by rename, so two workers never see half a folder.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

from compress.errors import InputError
from compress.records import StageRecord

ENV = "COMPRESS_CACHE"
# Steps whose folder holds everything they produced. package writes RUN_DIR/bundle beside its
# folder and benchmark measures on the test split: neither is shared between runs.
SHAREABLE_KINDS = ("teacher", "distill", "prune", "export", "quantize")


@runtime_checkable
class StepStore(Protocol):
    """Finished steps kept outside a run folder, by step name and resume key."""

    label: str  # what it is, for messages: "the cache"

    def serves(self, kind: str) -> bool:
        """Whether steps of ``kind`` are looked up in (and put into) this store."""

    def where(self, name: str, key: str) -> Path:
        """Where the step is (or would be) kept, for messages."""

    def fetch(self, name: str, key: str, dest: Path) -> bool:
        """Fill ``dest`` (a fresh temp folder) with the stored step; False when there is none."""

    def put(self, name: str, key: str, folder: Path) -> None:
        """Keep a copy of a finished step's folder (whole or not at all; a no-op when kept)."""


def finished(folder: Path, key: str) -> bool:
    """Whether ``folder`` holds a finished step of ``key`` (by its stage.json)."""
    try:
        return StageRecord.load(Path(folder) / "stage.json").finished(key)
    except InputError:  # none, or not a finished record of this version
        return False


def link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:  # another file system, or links not allowed: a copy holds the same bytes
        shutil.copy2(src, dst)


@dataclass
class FolderStore:
    """A ``StepStore``: a folder of finished step folders, each named by its key (or, when
    ``by_name``, by a hash of the step's name and key)."""

    root: Path
    kinds: tuple[str, ...]
    label: str
    by_name: bool = False
    copy: Callable[[str, str], object] = shutil.copy2
    hits: int = 0  # steps fetched from here

    def serves(self, kind: str) -> bool:
        return kind in self.kinds

    def where(self, name: str, key: str) -> Path:
        if self.by_name:
            return Path(self.root) / hashlib.sha256(f"{name}\0{key}".encode()).hexdigest()[:32]
        return Path(self.root) / key[:40]

    def fetch(self, name: str, key: str, dest: Path) -> bool:
        src = self.where(name, key)
        if not finished(src, key):
            return False
        shutil.rmtree(dest, ignore_errors=True)
        shutil.copytree(src, dest, copy_function=self.copy)
        self.hits += 1
        return True

    def put(self, name: str, key: str, folder: Path) -> None:
        dst = self.where(name, key)
        if finished(dst, key) or not finished(folder, key):
            return
        shutil.rmtree(dst, ignore_errors=True)  # a broken entry of the same key
        root = Path(self.root)
        root.mkdir(parents=True, exist_ok=True)
        tmp = root / f".tmp-{uuid.uuid4().hex}"
        try:
            shutil.copytree(folder, tmp, copy_function=self.copy)
            tmp.rename(dst)
        except OSError:
            if not finished(dst, key):  # another worker published the same step first: fine
                raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def cache_root(option: Path | None = None) -> Path:
    """The cache folder: the option, else ``$COMPRESS_CACHE``, else ``~/.cache/compress``."""
    if option is not None:
        return Path(option)
    if os.environ.get(ENV):
        return Path(os.environ[ENV])
    return Path.home() / ".cache" / "compress"


def teacher_cache(root: Path | None = None) -> FolderStore:
    """The cross-run cache of finished teacher steps (copies: a cache may be cleared any time)."""
    return FolderStore(cache_root(root) / "steps", ("teacher",), "the cache")


def search_store(root: Path) -> FolderStore:
    """The store a search's trials share (hard links, on one file system)."""
    return FolderStore(Path(root), SHAREABLE_KINDS, "the search's store", by_name=True,
                       copy=link_or_copy)
