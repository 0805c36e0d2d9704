"""The ``search:`` section of a pipeline YAML: which keys to vary, what to minimise, what must hold.

Torch-free, like the rest of the config. Every key of ``space:`` is a ``--set`` path of the same
pipeline, and every value it may take (each choice, both ends of a range) is checked by the
pipeline's own schema at validate time, so a bad path or value fails before any trial runs.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from compress.config.paths import apply_override, message
from compress.config.yamlmap import Loc, format_path, line_of
from compress.errors import ConfigError

Scalar = bool | int | float | str | None


class Dimension(BaseModel):
    """One searched key: a list of choices, or a numeric range {low, high[, step, log]} (integers
    when ``low``, ``high`` and ``step`` are integers)."""

    model_config = ConfigDict(extra="forbid")

    choices: list[Any] | None = Field(None, min_length=1, description="The values to try.")
    low: int | float | None = Field(None, description="Smallest value of a range (inclusive).")
    high: int | float | None = Field(None, description="Largest value of a range (inclusive).")
    step: int | float | None = Field(None, gt=0, description="Spacing of the values (none: continuous).")
    log: bool = Field(False, description="Sample on a log scale (low > 0, no step).")

    @model_validator(mode="before")
    @classmethod
    def _choices_or_range(cls, data: Any) -> Any:
        if isinstance(data, list):
            return {"choices": data}
        if not isinstance(data, dict):
            raise ValueError("expected a list of choices or a range {low, high[, step, log]} "
                             f"(got {type(data).__name__})")
        return data

    @model_validator(mode="after")
    def _ordered(self) -> Dimension:
        if self.choices is not None:
            if self.low is not None or self.high is not None:
                raise ValueError("give choices or low/high, not both")
            return self
        if self.low is None or self.high is None:
            raise ValueError("a range needs low and high")
        if self.low >= self.high:
            raise ValueError(f"low must be below high (got low {self.low}, high {self.high})")
        if self.log and (self.step is not None or self.low <= 0):
            raise ValueError("log needs low > 0 and no step")
        return self

    @property
    def is_int(self) -> bool:
        vals = (self.low, self.high) + (() if self.step is None else (self.step,))
        return all(isinstance(v, int) and not isinstance(v, bool) for v in vals)

    def ends(self) -> list[tuple[str, Any]]:
        """The values a validate-time check tries: every choice, or both ends of the range."""
        if self.choices is not None:
            return [("choice", v) for v in self.choices]
        return [("low", self.low), ("high", self.high)]

    def grid(self) -> list[Any] | None:
        """Every value (choices, or a stepped or integer range); None for a continuous range."""
        if self.choices is not None:
            return list(self.choices)
        step = self.step if self.step is not None else (1 if self.is_int else None)
        if step is None:
            return None
        n = int(round((self.high - self.low) / step))
        values = [self.low + i * step for i in range(n + 1) if self.low + i * step <= self.high + 1e-12]
        return [int(v) for v in values] if self.is_int else [round(v, 12) for v in values]


class Constraints(BaseModel):
    """What the chosen model must meet, judged on the validation split while searching."""

    model_config = ConfigDict(extra="forbid")

    max_accuracy_drop: float | None = Field(
        None, ge=0, le=1, description="Teacher's headline quality minus the trial's, at most "
        "(a fraction: 0.01 = one point).")
    min_quality: float | None = Field(None, description="The task's headline metric, at least.")
    max_bytes: int | None = Field(None, gt=0, description="Size of the final model file, at most.")
    max_latency_ms: float | None = Field(None, gt=0, description="p50 on the target, at most.")


class Confirm(BaseModel):
    """Before choosing, the best candidates are trained again at more seeds (the run's seed + 1,
    + 2, ...: another data split, teacher and training order), and only a candidate whose worst
    seed meets the quality constraints on validation may be chosen."""

    model_config = ConfigDict(extra="forbid")

    seeds: int = Field(2, ge=0, le=20, description="Seeds besides the run's own (0: no confirming).")
    top: int = Field(3, ge=1, le=100, description="Candidates confirmed at a time, in the order "
                     "the choice prefers them; when none of them holds, the next ones are.")


class SearchConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    space: dict[str, Dimension] = Field(
        min_length=1, description="YAML path (as --set takes it) -> a list of choices or a "
        "range {low, high, step, log}.")
    objective: Literal["latency", "size"] = Field(
        "latency", description="Minimise the final model's p50 on the target, or its file size.")
    constraints: Constraints = Field(default_factory=Constraints)
    trials: int = Field(20, ge=1, le=100_000, description="Finished trials (complete or stopped).")
    timeout_minutes: float | None = Field(None, gt=0, description="Stop starting trials after this.")
    sampler: Literal["tpe", "nsga2", "grid", "random"] = Field("tpe", description="Optuna sampler.")
    seed: int | None = Field(None, ge=0, description="Sampler seed (default: the pipeline's seed).")
    warmup_epochs: int = Field(
        3, ge=1, le=10_000, description="Distill epochs before a trial may be stopped early.")
    early_stop: bool = Field(
        True, description="Stop a trial whose validation quality cannot reach the constraint "
        "(its best so far plus the largest later gain any finished trial made from that epoch).")
    probe: bool = Field(
        True, description="Time each candidate untrained first; train it only when it can meet "
        "max_latency_ms / max_bytes and beat the best feasible trial.")
    front_slack: float | None = Field(
        0.1, ge=0, le=10, description="With probe: train a candidate only when its untrained "
        "objective is below the best feasible trial's times (1 + this, or 1 + tie when that is "
        "larger: a candidate within the tie could still be chosen); none: train every candidate "
        "that meets the constraints.")
    confirm: Confirm = Field(
        default_factory=Confirm, description="Confirm the best candidates at more seeds before "
        "choosing (with a quality constraint only).")
    tie: float = Field(
        0.05, ge=0, le=1, description="Feasible trials whose objective is within this fraction of "
        "the best count as tied; the one with the best validation quality among them is chosen "
        "(two timing sessions of one model differ by a few percent).")

    @model_validator(mode="after")
    def _grid_needs_values(self) -> SearchConfig:
        if self.sampler == "grid":
            for key, spec in self.space.items():
                if spec.grid() is None:
                    raise ValueError(f"sampler grid needs choices or a range with a step "
                                     f"(space {key!r} is continuous)")
        return self

    @property
    def probe_slack(self) -> float | None:
        """How far the untrained candidate may trail the best feasible trial and still train:
        ``front_slack``, widened to ``tie`` (a tied trial may win on validation quality)."""
        return None if self.front_slack is None else max(self.front_slack, self.tie)

    def quality_constraint(self) -> bool:
        c = self.constraints
        return c.max_accuracy_drop is not None or c.min_quality is not None


def encode(value: Any) -> str:
    """A value as ``--set`` reads it (JSON is YAML)."""
    return json.dumps(value)


def override(key: str, value: Any) -> str:
    return f"{key}={encode(value)}"


def is_scalar_choice(values: list[Any]) -> bool:
    """Optuna stores scalar choices as they are; lists and mappings travel as JSON text."""
    return all(v is None or isinstance(v, bool | int | float | str) for v in values)


def check_space(search: SearchConfig, raw: dict, path: Path, lines: dict[Loc, int],
                root: type[BaseModel], one_key: tuple[type[BaseModel], ...]) -> None:
    """Every key of ``search.space`` is a path ``--set`` accepts, and every value it may take gives
    a valid pipeline; else ``ConfigError`` naming the search entry's YAML path and line."""
    base = {k: v for k, v in raw.items() if k != "search"}
    for key, spec in search.space.items():
        loc: Loc = ("search", "space", key)
        prefix = f"{path}:{line_of(lines, loc)} {format_path(loc)}"
        for label, value in spec.ends():
            trial = copy.deepcopy(base)
            try:
                apply_override(trial, override(key, value), root, one_key)
            except ConfigError as e:
                raise ConfigError(f"{prefix}: {str(e).split(': ', 1)[-1]}") from None
            try:
                root.model_validate(trial)
            except ValidationError as e:
                err = e.errors(include_url=False)[0]
                where = format_path(tuple(err["loc"])) or "(top level)"
                raise ConfigError(f"{prefix}: {label} {encode(value)} is invalid: {where}: "
                                  f"{message(err, tuple(err['loc']), root)}") from None
