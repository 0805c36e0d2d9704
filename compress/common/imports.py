"""Import of user code, only where the user names it (``python: pkg.mod:function``)."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from compress.errors import InputError


def import_callable(ref: str, where: str) -> Callable[..., Any]:
    """Resolve ``pkg.mod:function``. ``where`` is the YAML path named in errors."""
    module_name, _, attr = ref.partition(":")
    if not module_name or not attr:
        raise InputError(f"{where}: expected 'package.module:function' (got {ref!r})")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise InputError(f"{where}: cannot import module {module_name!r} ({e})") from e
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise InputError(f"{where}: {module_name!r} has no callable {attr!r}")
    return fn
