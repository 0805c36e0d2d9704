"""The baseline file: its JSON model, versions 1 and 2, and reading it with one-line errors.

Version 1 (``compress`` before issue 27, and the bundle runner's ``--bench``) holds one session
pair's rounds; version 2 holds session pairs from several fresh processes (``baseline.py``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from compress.bench.reference import REFERENCE_VERSION, reference_sha256
from compress.bench.stats import RatioCI, fastest_ratio_ci
from compress.errors import InputError

FORMAT = "compress-latency-baseline"

PAIRS = 4  # session pairs per process, in a baseline and in a check
PROCESSES = 3  # fresh processes a baseline is measured in


class _Paired(BaseModel):
    """Per-block times of the model and of the reference, timed in alternation."""

    model_config = ConfigDict(extra="ignore")

    model_ms: list[float] = Field(min_length=2)
    reference_ms: list[float] = Field(min_length=2)

    @model_validator(mode="after")
    def _paired(self):
        _check_paired(self.model_ms, self.reference_ms)
        return self


class _Rounds(_Paired):
    """Version 1: one session pair, equal calls per block."""

    calls_per_block: int = Field(ge=1)


class _Session(_Paired):
    """Version 2: one session pair of one fresh process."""

    process: int = Field(ge=0)
    model_calls: int = Field(ge=1)
    reference_calls: int = Field(ge=1)


def _check_paired(model_ms: list[float], reference_ms: list[float]) -> None:
    if len(model_ms) != len(reference_ms):
        raise ValueError("model_ms and reference_ms must have the same length")
    if min(model_ms + reference_ms) <= 0:
        raise ValueError("block medians must be positive")


class _Settings(BaseModel):
    threads: int = Field(ge=1)
    opt_level: Literal["disable", "basic", "extended", "all"]
    clock: Literal["wall", "cpu"]


class BaselineFile(BaseModel):
    """The JSON a baseline file holds (unknown keys are kept for later versions)."""

    model_config = ConfigDict(extra="ignore")

    format: Literal["compress-latency-baseline"]
    version: Literal[1, 2]
    model: dict[str, Any]
    inputs: dict[str, dict[str, Any]]
    settings: _Settings
    fingerprint: dict[str, Any]
    reference: dict[str, Any]
    rounds: _Rounds | None = None
    sessions: list[_Session] | None = Field(default=None, min_length=1)
    normalized: dict[str, float]
    stats: dict[str, Any] = {}

    @model_validator(mode="after")
    def _has_rounds(self):
        key = "rounds" if self.version == 1 else "sessions"
        if getattr(self, key) is None:
            raise ValueError(f"version {self.version} needs {key}")
        return self

    def groups(self) -> list[list[RatioCI]]:
        """Each fresh process's session ratios (version 1: one process, one session)."""
        if self.sessions is None:
            return [[_ci(self.rounds.model_ms, self.rounds.reference_ms)]]
        by: dict[int, list[RatioCI]] = {}
        for x in self.sessions:
            by.setdefault(x.process, []).append(_ci(x.model_ms, x.reference_ms))
        return list(by.values())

    def pairs(self) -> int:
        return PAIRS if self.sessions is None else max(len(g) for g in self.groups())

    def calls(self) -> tuple[int, int]:
        if self.sessions is None:
            return self.rounds.calls_per_block, self.rounds.calls_per_block
        return self.sessions[0].model_calls, self.sessions[0].reference_calls

    def reference_file(self) -> str | None:
        return self.reference.get("path") if self.reference.get("kind") == "file" else None


def _ci(model_ms: list[float], reference_ms: list[float]) -> RatioCI:
    return fastest_ratio_ci(model_ms, reference_ms)


def load_baseline(path: str | Path) -> BaselineFile:
    """Read and check a baseline file; any problem is an InputError naming the file (exit 2)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: baseline file not found (create it with "
                         f"`compress bench MODEL.onnx --save-baseline {path}`)")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(f"{path}: not a baseline file (invalid JSON: {e})") from e
    try:
        base = BaselineFile.model_validate(raw)
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "top level"
        raise InputError(f"{path}: not a baseline file ({where}: {err['msg']})") from None
    if base.reference.get("kind", "builtin") == "builtin" and \
            base.reference.get("sha256") != reference_sha256():
        raise InputError(f"{path}: saved against reference workload "
                         f"v{base.reference.get('version')}, this compress builds "
                         f"v{REFERENCE_VERSION}: save the baseline again")
    return base
