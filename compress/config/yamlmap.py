"""YAML loading that remembers where each value sits, so errors can name ``file:line``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from compress.errors import ConfigError

Loc = tuple[str | int, ...]


def format_path(loc: Loc) -> str:
    """``('stages', 1, 'prune', 'ratio')`` -> ``stages[1].prune.ratio``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def load_yaml(path: Path) -> tuple[Any, dict[Loc, int]]:
    """Parse with ``safe_load`` semantics; return the data and a map of YAML path -> line."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a folder; expected a pipeline YAML file") from None
    except UnicodeDecodeError:
        what = "an ONNX model" if path.suffix.lower() in (".onnx", ".ort") else "a binary file"
        raise ConfigError(f"{path}: is {what}, not a pipeline YAML; name it in a config "
                          f"(teacher.onnx: {path.name}) and pass that YAML file") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the file ({e})") from None
    if not text.strip():
        raise ConfigError(f"{path}: the file is empty; expected a mapping that starts with 'version: 1'")
    try:
        data = yaml.safe_load(text)
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{where}: invalid YAML: {problem}") from None
    if data is None:
        raise ConfigError(f"{path}: the file is empty; expected a mapping that starts with 'version: 1'")
    if not isinstance(data, dict):
        raise ConfigError(f"{path}:1: the top level must be a mapping, got {_kind(data)}")
    lines: dict[Loc, int] = {}
    _walk(node, (), lines)
    return data, lines


def _walk(node: yaml.Node, loc: Loc, lines: dict[Loc, int]) -> None:
    lines[loc] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            key = k.value
            lines[(*loc, key)] = k.start_mark.line + 1
            _walk(v, (*loc, key), lines)
            lines[(*loc, key)] = k.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for i, v in enumerate(node.value):
            _walk(v, (*loc, i), lines)


def line_of(lines: dict[Loc, int], loc: Loc) -> int | None:
    """The line of the longest prefix of ``loc`` that the file holds."""
    for n in range(len(loc), -1, -1):
        if loc[:n] in lines:
            return lines[loc[:n]]
    return None


def _kind(v: Any) -> str:
    return {list: "a list", str: "a string", int: "a number", float: "a number", bool: "a boolean"}.get(
        type(v), type(v).__name__
    )
