"""The config schema seen as YAML paths: pydantic errors in the words a user reads, and
``--set KEY.PATH=VALUE`` overrides typed by the schema (torch-free, like the config)."""

from __future__ import annotations

import difflib
import re
from typing import Any, get_args, get_origin

import yaml
from pydantic import BaseModel

from compress.config.yamlmap import Loc, format_path
from compress.errors import ConfigError


def message(err: dict, loc: Loc, root: type[BaseModel]) -> str:
    """One pydantic error as the user reads it (the key path is printed by the caller)."""
    kind, ctx, got = err["type"], err.get("ctx", {}), err.get("input")
    if kind == "extra_forbidden":
        allowed = _allowed_keys(root, loc[:-1])
        near = near_miss(loc[-1], allowed) if loc else None
        hint = f"did you mean {near!r}? " if near else ""
        return f"unknown key; {hint}expected one of: {', '.join(allowed)}"
    if kind == "missing":
        return "required key is missing"
    if kind == "literal_error":
        expected = ctx.get("expected", "")
        return f"must be {'one of ' if ' or ' in expected else ''}{expected} (got {got!r})"
    bounds = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}
    if kind in bounds:
        limit = next(iter(ctx.values()))
        return f"must be {bounds[kind]} {limit} (got {got})"
    if kind in ("int_parsing", "int_type", "int_from_float"):
        return f"must be an integer (got {got!r})"
    if kind in ("float_parsing", "float_type"):
        return f"must be a number (got {got!r})"
    if kind in ("bool_parsing", "bool_type"):
        return f"must be true or false (got {got!r})"
    if kind in ("string_type",):
        return f"must be a string (got {got!r})"
    if kind in ("dict_type", "model_type", "model_attributes_type"):
        return f"must be a mapping (got {type(got).__name__})"
    if kind == "list_type":
        return f"must be a list (got {type(got).__name__})"
    if kind == "string_pattern_mismatch":
        return f"does not match the pattern {ctx.get('pattern')} (got {got!r})"
    if kind == "too_short":
        return "must not be empty"
    if kind == "value_error":
        return str(ctx.get("error", err["msg"]))
    return err["msg"]


def near_miss(key: object, allowed: list[str]) -> str | None:
    """The allowed key a typo most likely meant (``stagse`` -> ``stages``), if one is close."""
    if not isinstance(key, str):
        return None
    found = difflib.get_close_matches(key, allowed, n=1, cutoff=0.75)
    return found[0] if found else None


def _allowed_keys(root: type[BaseModel], loc: Loc) -> list[str]:
    model = _model_at(root, loc)
    return sorted(model.model_fields) if model else []


def _model_at(root: type[BaseModel], loc: Loc) -> type[BaseModel] | None:
    model: Any = root
    for part in loc:
        if isinstance(part, int):
            continue
        if not (isinstance(model, type) and issubclass(model, BaseModel)) or part not in model.model_fields:
            return None
        model = _unwrap(model.model_fields[part].annotation)
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


def _unwrap(tp: Any) -> Any:
    """``list[X] | None`` -> ``X``: the model type inside optional and list annotations."""
    while get_origin(tp) is not None:
        args = [a for a in get_args(tp) if a is not type(None)]
        models = [a for a in args if isinstance(a, type) and issubclass(a, BaseModel)]
        tp = models[0] if models else (args[0] if args and get_origin(tp) is list else None)
        if tp is None:
            return None
    return tp


def norm(key: str) -> str:
    """``a[0].b`` -> ``a.0.b``."""
    return re.sub(r"\[(\d+)\]", r".\1", key)


def apply_override(raw: dict, item: str, root: type[BaseModel],
                   one_key: tuple[type[BaseModel], ...] = ()) -> None:
    """Apply ``a.b[0].c=value`` (value parsed as YAML) to ``raw``; the path must exist in the
    schema of ``root``. ``one_key`` models are mappings with one chosen key (a stage entry)."""
    key, sep, value = item.partition("=")
    if not sep or not key:
        raise ConfigError(f"--set {item}: expected KEY.PATH=VALUE")
    parts: list[str | int] = [int(p) if p.isdigit() else p for p in norm(key).split(".")]
    try:
        parsed = yaml.safe_load(value) if value else ""
    except yaml.YAMLError:
        parsed = value
    node: Any = raw
    model: Any = root
    for i, part in enumerate(parts):
        here = format_path(tuple(parts[: i + 1]))
        last = i == len(parts) - 1
        if isinstance(part, int):
            if not isinstance(node, list) or part >= len(node):
                size = len(node) if isinstance(node, list) else 0
                raise ConfigError(f"--set {key}: {here} does not exist (the list has {size} items)")
            if last:
                node[part] = parsed
            else:
                node = node[part]
            continue
        free_dict = model is dict
        model_was = model
        if not free_dict:
            if not (isinstance(model, type) and issubclass(model, BaseModel)) or part not in model.model_fields:
                choices = ", ".join(sorted(model.model_fields)) if isinstance(model, type) and issubclass(model, BaseModel) else ""
                hint = f"; expected one of: {choices}" if choices else ""
                raise ConfigError(f"--set {key}: no such key {here}{hint}")
            ann = model.model_fields[part].annotation
            inner = _unwrap(ann)
            model = dict if inner is None and _is_dict(ann) else inner
        if not isinstance(node, dict):
            raise ConfigError(f"--set {key}: {format_path(tuple(parts[:i]))} is not a mapping")
        if model_was in one_key and node and part not in node:
            have = next(iter(node))
            raise ConfigError(
                f"--set {key}: {format_path(tuple(parts[:i]))} is a {have} stage, not {part}"
            )
        if last:
            node[part] = parsed
        else:
            node = node.setdefault(part, [] if _is_list(ann if not free_dict else None) else {})


def _is_dict(tp: Any) -> bool:
    return tp is dict or get_origin(tp) is dict or any(_is_dict(a) for a in get_args(tp))


def _is_list(tp: Any) -> bool:
    return tp is not None and (get_origin(tp) is list or any(_is_list(a) for a in get_args(tp)))
