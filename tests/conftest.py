"""Every test gets its own step cache (compress/engine/step_cache.py), never ~/.cache/compress:
a teacher cached by one test must not turn another test's training into a copy."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _own_step_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("COMPRESS_CACHE", str(tmp_path_factory.mktemp("compress-cache")))
