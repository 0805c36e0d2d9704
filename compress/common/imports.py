"""Import of user code, only where the user names it (``python: pkg.mod:function``).

A config's own folder is searched too (``add_search_dir``, called by the CLI with the YAML's
folder), first, as Python searches a script's folder: a factory module beside the YAML imports
without PYTHONPATH.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from compress.errors import InputError

_SEARCH: list[str] = []  # folders added to sys.path when the first reference is imported


def add_search_dir(folder: str | Path) -> None:
    """Let ``python:`` references import modules from ``folder`` (a config's folder)."""
    path = str(Path(folder).resolve())
    if path not in _SEARCH:
        _SEARCH.append(path)


def _use_search_dirs() -> None:
    for path in reversed(_SEARCH):
        if path not in sys.path:
            sys.path.insert(0, path)
            importlib.invalidate_caches()


def import_callable(ref: str, where: str) -> Callable[..., Any]:
    """Resolve ``pkg.mod:function``. ``where`` is the YAML path named in errors."""
    module_name, _, attr = ref.partition(":")
    if not module_name or not attr:
        raise InputError(f"{where}: expected 'package.module:function' (got {ref!r})")
    _use_search_dirs()
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        beside = f"; looked beside the config too ({', '.join(_SEARCH)})" if _SEARCH else ""
        raise InputError(f"{where}: cannot import module {module_name!r} ({e}){beside}") from e
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise InputError(f"{where}: {module_name!r} has no callable {attr!r}")
    return fn
