"""The bundle's ``manifest.json``, typed: what a device, the runner, ``compress deploy`` and a web
page read. Every field is required (a ``None`` value is written as ``null`` and means "does not
apply"); a manifest missing a key is refused, never filled with a default. The standalone runner
(``runner.py``) reads the same fields with its own small reader.

Fields (manifest_version 2):

- ``manifest_version``: 2. ``producer``: ``compress X.Y.Z``. ``created``: ISO time (UTC).
- ``task``: ``classification`` or ``embedding``.
- ``files``: ``{relative path: {sha256, bytes}}`` for every file but the manifest itself.
- ``io``: the model's ``inputs`` and ``outputs``, each ``{name, shape, dtype}`` (a dynamic
  dimension is its name, a string).
- ``model``: file names (``onnx``, ``mobile_onnx``, ``ort``, ``ops_config``) and how the ``.ort``
  was cut (``ort_platform``, ``ort_optimization_style``, ``ort_optimization_level``,
  ``ort_graph_ops``).
- ``runtime``: how to open the session: ``model`` (the file to load), ``providers`` (ORT names in
  order, CPU last), ``threads`` (intra-op), ``opt_level`` (disable|basic|extended|all).
- ``eval``: ``file`` (``eval.npz``: one array per model input, ``expected__<output>`` reference
  outputs, ``labels`` when ``labels`` is true), ``samples``.
- ``check``: the device check ``runner.py --eval`` runs: ``precision`` and, per output, the
  tolerance against the reference outputs (``argmax_agreement`` at least, ``max_abs_diff`` at
  most, ``cosine_mean`` and ``cosine_min`` at least; ``null`` where it does not apply) and the
  ``basis`` of those numbers.
- ``preprocess``: the preprocessing record's file (``preprocess.json``), its ``kind`` and
  ``version``.
- ``mobile``: the fixes applied to the mobile variant and NNAPI/CoreML readiness.
- ``bench``: the reference workload (``bench/reference.onnx``) for latency baselines.
- ``quality``: the headline metric measured in the run (``null`` values when it was not).
- ``latency``: ``threads`` and ``opt_level`` the run measured at, ``ms`` (p50, p90, ... or empty
  when not measured), ``where``.
- ``config_sha256``, ``libraries`` (versions), ``target`` (``compress deploy`` only, else null).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from compress.errors import InputError

MANIFEST_VERSION = 2


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FileEntry(_Strict):
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    bytes: int = Field(ge=0)


class TensorInfo(_Strict):
    name: str
    shape: list[int | str]
    dtype: str


class ModelIO(_Strict):
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]


class ModelFiles(_Strict):
    onnx: str
    mobile_onnx: str
    ort: str
    ops_config: str
    ort_platform: Literal["arm", "amd64"]
    ort_optimization_style: Literal["runtime", "fixed"]
    ort_optimization_level: Literal["basic", "extended", "all"]
    ort_graph_ops: list[str]


class Runtime(_Strict):
    model: str
    providers: list[str] = Field(min_length=1)
    threads: int = Field(ge=1)
    opt_level: Literal["disable", "basic", "extended", "all"]


class EvalSection(_Strict):
    file: str
    samples: int = Field(ge=1)
    labels: bool


class Tolerance(_Strict):
    """How close a device's outputs must come to ``eval.npz``'s ``expected__<output>``."""

    output: str
    argmax_agreement: float | None = Field(description="classifiers: share of samples whose "
                                                       "argmax equals the reference's, at least")
    max_abs_diff: float | None = Field(description="largest absolute difference, at most")
    cosine_mean: float | None = Field(description="embeddings: mean cosine, at least")
    cosine_min: float | None = Field(description="embeddings: smallest cosine, at least")
    basis: str = Field(description="where these numbers come from")


class Check(_Strict):
    precision: Literal["fp32", "int8", "mixed"]
    outputs: list[Tolerance] = Field(min_length=1)


class PreprocessRef(_Strict):
    file: str
    kind: Literal["image", "text"]
    version: int


class Mobile(_Strict):
    fixes: list[str]
    readiness: dict[str, Any]
    before_fixes: dict[str, Any]


class Bench(_Strict):
    reference: str
    reference_version: int


class Quality(_Strict):
    metric: str | None
    value: float | None
    split: str | None
    metrics: dict[str, float]


class Latency(_Strict):
    """Latency measured in the run, and the session settings it was measured with."""

    threads: int = Field(ge=1)
    opt_level: Literal["disable", "basic", "extended", "all"]
    ms: dict[str, float]
    where: str


class Target(_Strict):
    name: str
    profile: dict[str, Any]
    notices: list[str]


class Manifest(_Strict):
    manifest_version: Literal[2]
    producer: str
    created: str
    task: str
    files: dict[str, FileEntry]
    io: ModelIO
    model: ModelFiles
    runtime: Runtime
    eval: EvalSection
    check: Check
    preprocess: PreprocessRef
    mobile: Mobile
    bench: Bench
    quality: Quality
    latency: Latency
    config_sha256: str
    libraries: dict[str, str]
    target: Target | None

    def dump(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def read_manifest(path: Path) -> Manifest:
    """``path`` parsed and checked; InputError (exit 2) names the first missing or bad key."""
    if not path.is_file():
        raise InputError(f"{path}: no bundle manifest (run the package stage first)")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(raw, dict):
        raise InputError(f"{path}: expected a bundle manifest (a JSON object)")
    if raw.get("manifest_version") != MANIFEST_VERSION:
        raise InputError(f"{path}: unknown manifest_version {raw.get('manifest_version')!r} "
                         f"(expected {MANIFEST_VERSION})")
    try:
        return Manifest.model_validate(raw)
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "top level"
        if err["type"] == "missing":
            raise InputError(f"{path}: missing key {where!r}") from None
        raise InputError(f"{path}: {where}: {err['msg']}") from None
