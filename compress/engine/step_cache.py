"""Finished steps shared between run directories, content-addressed by their resume key.

A teacher trained for one ``--out`` comes out bit-identical in the next (same config, data, seed
and device: the key covers them all), so the engine keeps a copy of the finished step folder
under the cache and copies it into a new run directory instead of training again. The copy is
checked the way resume checks a run's own folder (every file's hash against its stage.json).

Where: ``--cache-dir``, else ``$COMPRESS_CACHE``, else ``~/.cache/compress``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from compress.common.files import read_json

ENV = "COMPRESS_CACHE"


def cache_root(option: Path | None = None) -> Path:
    """The cache folder: the option, else ``$COMPRESS_CACHE``, else ``~/.cache/compress``."""
    if option is not None:
        return Path(option)
    if os.environ.get(ENV):
        return Path(os.environ[ENV])
    return Path.home() / ".cache" / "compress"


class StepCache:
    def __init__(self, root: Path):
        self.root = Path(root) / "steps"

    def folder(self, key: str) -> Path:
        return self.root / key[:40]

    def has(self, key: str) -> bool:
        record = read_json(self.folder(key) / "stage.json")
        return isinstance(record, dict) and record.get("key") == key and record.get("status") == "done"

    def fetch(self, key: str, dest_tmp: Path) -> bool:
        """Copy the cached step into ``dest_tmp`` (a fresh temp folder); False when none."""
        if not self.has(key):
            return False
        shutil.rmtree(dest_tmp, ignore_errors=True)
        shutil.copytree(self.folder(key), dest_tmp)
        return True

    def store(self, key: str, src: Path) -> None:
        """Keep a copy of a finished step folder (whole or not at all)."""
        if self.has(key):
            return
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".store-", dir=self.root))
        try:
            shutil.copytree(src, tmp / "step")
            final = self.folder(key)
            shutil.rmtree(final, ignore_errors=True)  # a stale or partial entry of the same key
            (tmp / "step").rename(final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
