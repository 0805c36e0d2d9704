"""A Hugging Face model directory's ``config.json``, read and checked without transformers.

One reader for every place that takes a model directory from a user (an encoder teacher or
student, an LLM teacher, ``compress validate``), so each says the same thing about the same
broken file.
"""

from __future__ import annotations

import json
from pathlib import Path

from compress.errors import InputError


def one_line(e: BaseException) -> str:
    """The first line of an exception's message (a JSON or load error can run to many)."""
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


def read_model_config(folder: Path, where: str, expected: str) -> dict:
    """``folder/config.json`` as a dict that names its ``model_type``.

    ``where`` is the YAML path or argument and ``expected`` what such a directory holds, both
    for the messages.

    Raises:
        InputError: the file is missing, is not JSON, or is not an object with ``model_type``.
    """
    config = folder / "config.json"
    if not config.is_file():
        raise InputError(f"{where}: {config}: no such file ({expected})")
    try:
        parsed = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(f"{where}: {config}: not valid JSON ({one_line(e)})") from None
    if not isinstance(parsed, dict) or "model_type" not in parsed:
        raise InputError(f"{where}: {config}: expected a JSON object with 'model_type'")
    return parsed
