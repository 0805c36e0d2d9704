"""Which settings differ between two runs: each run directory's ``config.resolved.yaml`` (the
YAML as the run applied it, ``--set`` overrides included) flattened to dotted YAML paths
(``stages[1].prune.macs``) and compared key by key."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from compress.errors import InputError

RESOLVED = "config.resolved.yaml"
ABSENT = "(absent)"


@dataclass(frozen=True)
class KeyDiff:
    """One setting whose value differs between run A and run B (``ABSENT`` where a run lacks it)."""

    key: str
    a: str
    b: str

    def line(self) -> str:
        return f"{self.key}: {self.a} -> {self.b}"


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """``{"stages": [{"prune": {"macs": 0.35}}]}`` -> ``{"stages[0].prune.macs": 0.35}``; an empty
    mapping or list is a value of its own."""
    if isinstance(value, dict) and value:
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    if isinstance(value, list) and value:
        out = {}
        for i, v in enumerate(value):
            out.update(flatten(v, f"{prefix}[{i}]"))
        return out
    return {prefix: value}


def read_resolved(run_dir: Path) -> dict[str, Any] | None:
    """The resolved config of a run, None when the run wrote none; InputError when the file is
    not a YAML mapping."""
    import yaml

    path = Path(run_dir) / RESOLVED
    if not path.is_file():
        return None
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        raise InputError(f"{path}: not valid YAML ({where}{getattr(err, 'problem', err)})") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a YAML mapping, got {type(data).__name__}")
    return data


def _text(v: Any) -> str:
    import json

    return v if isinstance(v, str) else json.dumps(v)


def _diff(a: dict[str, Any], b: dict[str, Any]) -> list[KeyDiff]:
    keys = list(a) + [k for k in b if k not in a]
    return [KeyDiff(k, _text(a[k]) if k in a else ABSENT, _text(b[k]) if k in b else ABSENT)
            for k in keys if (k in a) != (k in b) or (k in a and a[k] != b[k])]


def _kinds(stages: Any) -> list[str] | None:
    if not isinstance(stages, list) or not all(isinstance(s, dict) and len(s) == 1 for s in stages):
        return None
    return [next(iter(s)) for s in stages]


def config_differences(a: dict[str, Any], b: dict[str, Any]) -> list[KeyDiff]:
    """The keys whose values differ, in run A's order, then keys only run B has. When the runs'
    stage lists differ, one ``stages`` line gives both lists, and a stage both runs have (matched
    by kind, in order) is compared at its place in run B, not key by key against another kind."""
    sa, sb = (r["stages"] if "stages" in r else None for r in (a, b))
    kinds_a, kinds_b = _kinds(sa), _kinds(sb)
    if kinds_a is None or kinds_b is None or kinds_a == kinds_b:
        return _diff(flatten(a), flatten(b))
    rest = _diff(flatten({k: v for k, v in a.items() if k != "stages"}),
                 flatten({k: v for k, v in b.items() if k != "stages"}))
    out = [*rest, KeyDiff("stages", _text(kinds_a), _text(kinds_b))]
    taken: set[int] = set()
    for ia, kind in enumerate(kinds_a):
        ib = next((j for j, k in enumerate(kinds_b) if k == kind and j not in taken), None)
        if ib is not None:
            taken.add(ib)
            out += _diff(flatten(sa[ia], f"stages[{ib}]"), flatten(sb[ib], f"stages[{ib}]"))
    return out


def compare_configs(dir_a: Path, dir_b: Path) -> tuple[list[KeyDiff], str | None]:
    """``(differing keys, note)``: the note says why the settings were not compared (a run
    without ``config.resolved.yaml``), else None."""
    ca, cb = read_resolved(dir_a), read_resolved(dir_b)
    missing = [n for n, c in (("A", ca), ("B", cb)) if c is None]
    if missing:
        return [], (f"run {' and '.join(missing)} has no {RESOLVED}: "
                    "the settings were not compared")
    return config_differences(ca, cb), None
