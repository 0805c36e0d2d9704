"""The ``python:`` factories a config names, checked as the run will meet them, before anything
is trained: each module imported and its function found, and a data factory called when the
package stage will need the preprocessing record it returns.

The imports run in a child process (``python -m compress.config.factories``), so user code that
imports torch never loads it into ``compress validate``. The child gets the sys.path the run
would have: the YAML's folder first (as ``add_search_dir`` gives a run), then the parent's.
Torch-free.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

from compress.config.yamlmap import Loc, format_path, line_of, load_yaml
from compress.errors import ConfigError, InputError

PROBE_TIMEOUT_S = 600  # a data factory may read its files: as long as the run's first step would


@dataclass
class Probe:
    """One ``python:`` reference to check: ``call`` calls it with ``kwargs`` and reports whether
    what it returns carries a preprocessing record."""

    loc: Loc
    ref: str
    call: bool = False
    kwargs: dict = field(default_factory=dict)


def probes(cfg) -> list[Probe]:
    """The config's ``python:`` references, in the order a run imports them."""
    d = cfg.data
    out = [Probe(("teacher", "python"), cfg.teacher.python)] if cfg.teacher.python else []
    if cfg.student is not None and cfg.student.python:
        out.append(Probe(("student", "python"), cfg.student.python))
    if d.source == "python" and d.python:
        packaged = any(k == "package" for k, _ in cfg.stage_list())
        # the package stage ships the factory's record; without one stated, the factory must give it
        out.append(Probe(("data", "python"), d.python, packaged and d.preprocess is None, d.kwargs))
    if d.transfer is not None and d.transfer.source == "python" and d.transfer.python:
        out.append(Probe(("data", "transfer", "python"), d.transfer.python))
    out += [Probe(("data", "eval_sets", i, "python"), e.python)
            for i, e in enumerate(d.eval_sets) if e.python]
    return out


def check_factories(cfg, config_path: Path) -> None:
    """Import every ``python:`` factory of ``cfg`` in a child process; ``ConfigError`` with
    ``file:line``, the YAML path and the cause for the first that a run would fail on."""
    todo = probes(cfg)
    if not todo:
        return
    msg = {"path": [str(Path(config_path).parent.resolve()), *sys.path],
           "probes": [{**asdict(p), "loc": list(p.loc)} for p in todo]}
    try:
        done = subprocess.run([sys.executable, "-m", "compress.config.factories"],
                              input=json.dumps(msg, default=str), capture_output=True, text=True,
                              timeout=PROBE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise InputError(f"{format_path(todo[0].loc)}: importing the python: factories took over "
                         f"{PROBE_TIMEOUT_S} s") from None
    last = done.stdout.strip().splitlines()[-1:] or [""]
    try:
        found = json.loads(last[0])
    except json.JSONDecodeError:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise InputError(f"{format_path(todo[0].loc)}: checking the python: factories failed "
                         f"(exit {done.returncode}: {tail})") from None
    if found is not None:
        loc, text = tuple(found["loc"]), found["message"]
        _, lines = load_yaml(config_path)
        raise ConfigError(f"{config_path}:{line_of(lines, loc)} {format_path(loc)}: {text}")


def _no_preprocess(ref: str) -> str:
    return (f"the package stage ships how a raw input becomes the model input, and {ref} returns "
            "no preprocessing record: set data.preprocess (color, size, resize, scale, mean, std; "
            "see compress/config/preprocess.py), or return it from the factory as {'train': ..., "
            "'val': ..., 'preprocess': ...}")


def _has_record(out) -> bool:
    """Whether a factory's return value carries a preprocessing record, as the data loader reads
    it: a ``preprocess`` key of a split dict, or a ``preprocess`` attribute of the dataset."""
    if isinstance(out, dict) and {"train", "val"} <= set(out):
        return out.get("preprocess") is not None
    base = out.dataset if hasattr(out, "dataset") and not hasattr(out, "__getitem__") else out
    return getattr(base, "preprocess", None) is not None


def _probe(p: dict) -> tuple[Loc, str] | None:
    """In the child: import (and maybe call) one reference; the YAML path and the refusal."""
    import importlib

    module_name, _, attr = p["ref"].partition(":")
    loc = tuple(p["loc"])
    if not module_name or not attr:
        return loc, f"expected 'package.module:function' (got {p['ref']!r})"
    try:
        module = importlib.import_module(module_name)
    except Exception as e:  # reported to the user in one line: any error of their module
        cause = str(e) if isinstance(e, ImportError) else f"{type(e).__name__}: {e}"
        return loc, f"cannot import module {module_name!r} ({cause})"
    fn = getattr(module, attr, None)
    if not callable(fn):
        return loc, f"{module_name!r} has no function {attr!r}"
    if not p["call"]:
        return None
    try:
        out = fn(**p["kwargs"])
    except Exception as e:  # reported in one line, as the run's data loading would fail
        return loc, f"{p['ref']} raised {type(e).__name__}: {e}"
    if not _has_record(out):
        return (*loc[:-1], "preprocess"), _no_preprocess(p["ref"])
    return None


def _child() -> None:
    """Read the probes on stdin, write the first refusal (or null) as the last stdout line."""
    msg = json.loads(sys.stdin.read())
    sys.path[:] = msg["path"]
    out, sys.stdout = sys.stdout, sys.stderr  # what user modules print must not hide the answer
    found = None
    for p in msg["probes"]:
        refused = _probe(p)
        if refused is not None:
            found = {"loc": list(refused[0]), "message": refused[1]}
            break
    out.write("\n" + json.dumps(found) + "\n")
    out.flush()


if __name__ == "__main__":
    _child()
