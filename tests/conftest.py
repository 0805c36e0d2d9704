"""Every test module, and every test in it, gets its own step cache (compress/engine/step_cache.py),
never ~/.cache/compress: a teacher cached by one test must not turn another's training into a copy.
The module-wide one serves module-scoped fixtures (they are set up before any test's own). The
folders are only named here; the cache creates one when it first stores a step."""

from __future__ import annotations

import itertools

import pytest

_n = itertools.count()


def _fresh(tmp_path_factory) -> str:
    return str(tmp_path_factory.getbasetemp() / f"compress-cache-{next(_n)}")


@pytest.fixture(autouse=True, scope="module")
def _module_step_cache(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("COMPRESS_CACHE", _fresh(tmp_path_factory))
        yield


@pytest.fixture(autouse=True)
def _own_step_cache(_module_step_cache, tmp_path_factory, monkeypatch):
    monkeypatch.setenv("COMPRESS_CACHE", _fresh(tmp_path_factory))
