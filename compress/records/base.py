"""The base of every record that crosses rooms: typed fields that keep their JSON keys, a
``load`` that names the file and the bad or missing key in one line, and an atomic ``dump``."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, ClassVar, Self

from pydantic import BaseModel, ConfigDict, ValidationError, model_serializer, model_validator

from compress.common.files import load_json, write_json
from compress.errors import InputError


class Record(BaseModel):
    """A typed row of a report. Fields named in ``metric_keys`` are stored under the task's
    metric name (``val`` -> ``val_accuracy``); fields in ``omit_none`` are left out when None."""

    model_config = ConfigDict(extra="forbid", validate_by_name=True, validate_by_alias=True,
                              serialize_by_alias=True)
    metric_keys: ClassVar[dict[str, str]] = {}
    omit_none: ClassVar[tuple[str, ...]] = ()
    metric_stored: ClassVar[bool] = False  # the ``metric`` field is a key of its own too

    @model_serializer(mode="wrap")
    def _store(self, handler) -> dict[str, Any]:
        out: dict[str, Any] = {}
        metric = getattr(self, "metric", None)
        for key, value in handler(self).items():
            if key in self.omit_none and value is None:
                continue
            if key in self.metric_keys:
                if metric is None:
                    continue  # nothing measured under a metric (an untrained teacher)
                key = self.metric_keys[key].format(metric=metric)
            elif key == "metric" and self.metric_keys and not self.metric_stored:
                continue
            out[key] = value
        return out

    @model_validator(mode="before")
    @classmethod
    def _load(cls, data: Any) -> Any:
        if not cls.metric_keys or not isinstance(data, dict):
            return data
        data = dict(data)
        metric = data.get("metric") or _metric_in(data, cls.metric_keys)
        for name, template in cls.metric_keys.items():
            if metric is not None and template.format(metric=metric) in data:
                data[name] = data.pop(template.format(metric=metric))
        data["metric"] = metric
        return data

    def as_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="python")


def _metric_in(data: dict, templates: dict[str, str]) -> str | None:
    """The metric name a stored record's keys were written under (``val_accuracy`` -> accuracy)."""
    for template in templates.values():
        pattern = re.escape(template).replace(re.escape("{metric}"), "(.+)")
        found = {m[1] for k in data if (m := re.fullmatch(pattern, k))}
        if len(found) == 1:
            return found.pop()
    return None


class FileRecord(Record):
    """A record that is a JSON file of its own (stage.json, report.json, search.json)."""

    what: ClassVar[str] = "a JSON record"  # what the file should be, for messages

    @classmethod
    def load(cls, path: str | Path) -> Self:
        """The record in ``path``; InputError naming the file and the bad or missing key."""
        return cls.parse(load_json(path, cls.what), path)

    @classmethod
    def parse(cls, data: Any, where: str | Path) -> Self:
        """The record of parsed JSON ``data``; InputError naming ``where`` and the bad key."""
        if not isinstance(data, dict):
            raise InputError(f"{where}: expected a JSON object, got {type(data).__name__}")

        try:
            return cls.model_validate(data)
        except ValidationError as err:
            raise InputError(f"{where}: {problem(err)}") from None

    def dump(self, path: str | Path) -> Path:
        """Write the record to ``path`` atomically (temp file + rename)."""
        return write_json(path, self.as_dict())


def problem(err: ValidationError) -> str:
    """The first error of a validation as ``key 'models[0].bytes': what is wrong (got ...)``."""
    first = err.errors()[0]
    where = where_of(first["loc"])
    if first["type"] == "missing":
        return f"missing key '{where}'"
    if first["type"] == "extra_forbidden":
        return f"unexpected key '{where}'"
    got = repr(first.get("input"))
    got = got if len(got) <= 60 else got[:57] + "..."
    return f"key '{where}': {first['msg']} (got {got})"


def where_of(loc: tuple) -> str:
    """``('models', 0, 'bytes')`` -> ``models[0].bytes``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


History = list[dict[str, Any]]  # one training run's epochs: {"epoch", "loss", "val_<metric>"}


class StageReport(Record):
    """What one stage measured. ``kind`` names the stage kind it belongs to (the reports are in
    ``compress.records.stage_reports`` and, for task causal-lm, ``compress.records.causal_lm``)."""

    kind: ClassVar[str] = ""

    def histories(self) -> list[tuple[str, History]]:
        """(label, epochs) of every training run this stage holds, in the order they ran."""
        return []
