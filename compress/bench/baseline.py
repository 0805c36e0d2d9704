"""Latency baselines: save a model's latency relative to a fixed reference workload, check later.

The file holds the block medians of the model and of the reference workload (``reference.py``),
measured interleaved in one run, plus a machine fingerprint. A later check measures both again,
interleaved, and compares the normalized latency (model / reference) with the stored one: a
machine that is uniformly faster or slower does not read as a change in the model.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from compress.bench.compare import (
    CompareSettings,
    Comparison,
    calls_per_block,
    compare_models,
    describe,
    is_failure,
    model_feeds,
    open_model,
    percent,
    sequential_rounds,
    session_runner,
    warm_interleaved,
)
from compress.bench.latency import feed_spec, feeds_like, pick_clock
from compress.bench.reference import REFERENCE_VERSION, reference_model_bytes, reference_sha256
from compress.common.files import sha256_file, write_json
from compress.errors import InputError

FORMAT = "compress-latency-baseline"
# ISA extensions that change which kernels ORT picks (int8 VNNI, bf16, AMX, NEON dot product)
_ISA = {"sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni",
        "avx_vnni", "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16", "asimd", "asimddp", "sve",
        "sve2", "i8mm", "bf16", "fphp", "asimdhp"}
FINGERPRINT_KEYS = ("cpu", "isa", "cores", "machine", "ort", "threads", "opt_level", "clock")


@dataclass
class Verdict:
    """The answer of a latency check. ``ratio`` > 1 means the model got slower."""

    verdict: str  # "slower" | "not slower" | "inconclusive"
    ratio: float
    ci_low: float
    ci_high: float
    fingerprint_mismatch: list[str] = field(default_factory=list)
    message: str = ""

    def failed(self, strict: bool = False) -> bool:
        """True for ``slower``; with ``strict`` also for ``inconclusive``."""
        return is_failure(self.verdict, strict)

    def as_dict(self) -> dict:
        return asdict(self)


def machine_fingerprint(threads: int, opt_level: str, clock: str = "cpu") -> dict[str, Any]:
    """What decides a latency besides the model: CPU, ISA, cores, ORT version and settings."""
    import onnxruntime as ort

    from compress.common.ort import cpu_info

    cpu, flags = cpu_info()
    return {"cpu": cpu, "isa": sorted(flags & _ISA), "cores": os.cpu_count(),
            "machine": platform.machine(), "ort": ort.__version__, "threads": threads,
            "opt_level": opt_level, "clock": clock}


def fingerprint_mismatch(saved: dict, now: dict) -> list[str]:
    """``key: saved -> now`` for each fingerprint field that differs."""
    return [f"{k}: {saved.get(k)!r} -> {now.get(k)!r}" for k in FINGERPRINT_KEYS
            if saved.get(k) != now.get(k)]


def format_fingerprint(fp: dict) -> str:
    isa = ",".join(i for i in fp.get("isa", []) if i.startswith(("avx512", "amx", "avx_vnni", "sve")))
    return (f"{fp.get('cpu')}, {fp.get('cores')} cores{', ' + isa if isa else ''}, "
            f"ORT {fp.get('ort')}, {fp.get('threads')} thread(s), opt {fp.get('opt_level')}, "
            f"{fp.get('clock')} clock")


# -- the file ----------------------------------------------------------------------------------

class _Rounds(BaseModel):
    model_config = ConfigDict(extra="ignore")

    calls_per_block: int = Field(ge=1)
    model_ms: list[float] = Field(min_length=2)
    reference_ms: list[float] = Field(min_length=2)

    @model_validator(mode="after")
    def _paired(self):
        if len(self.model_ms) != len(self.reference_ms):
            raise ValueError("model_ms and reference_ms must have the same length")
        if min(self.model_ms + self.reference_ms) <= 0:
            raise ValueError("block medians must be positive")
        return self


class _Settings(BaseModel):
    threads: int = Field(ge=1)
    opt_level: Literal["disable", "basic", "extended", "all"]
    clock: Literal["wall", "cpu"]


class BaselineFile(BaseModel):
    """The JSON a baseline file holds (unknown keys are kept for later versions)."""

    model_config = ConfigDict(extra="ignore")

    format: Literal["compress-latency-baseline"]
    version: Literal[1]
    model: dict[str, Any]
    inputs: dict[str, dict[str, Any]]
    settings: _Settings
    fingerprint: dict[str, Any]
    reference: dict[str, Any]
    rounds: _Rounds
    normalized: dict[str, float]
    stats: dict[str, Any] = {}


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
    if base.reference.get("sha256") != reference_sha256():
        raise InputError(f"{path}: saved against reference workload "
                         f"v{base.reference.get('version')}, this compress builds "
                         f"v{REFERENCE_VERSION}: save the baseline again")
    return base


def _measure_pair(model_path: str | Path, threads: int, opt_level: str, settings: CompareSettings,
                  feeds: dict | None, calls: int | None, stop, base=None) -> tuple[Comparison, dict, float]:
    clock = pick_clock(settings.clock, threads)
    sm, created = open_model(model_path, threads, opt_level)
    sr, _ = open_model(reference_model_bytes(), threads, opt_level)
    feeds = feeds if feeds is not None else model_feeds(sm)
    names = [i.name for i in sm.get_inputs()]
    if sorted(feeds) != sorted(names):
        raise InputError(f"{model_path}: model inputs ({', '.join(names)}) differ from the inputs "
                         f"the baseline was measured with ({', '.join(feeds)})")
    runs = [session_runner(sm, feeds, clock), session_runner(sr, model_feeds(sr), clock)]
    per_call = warm_interleaved(runs, settings)
    calls = calls or calls_per_block(max(per_call), settings)
    return sequential_rounds(runs[0], runs[1], calls, settings, stop, base), feeds, created


def save_baseline(model_path: str | Path, out: str | Path, threads: int = 1,
                  opt_level: str = "all", settings: CompareSettings | None = None,
                  feeds: dict | None = None, precision: float = 0.02) -> dict:
    """Measure the model and the reference interleaved; write the baseline file atomically.

    Measures until the interval of model/reference is narrower than ``precision`` (relative),
    or ``settings.max_seconds``. Returns the JSON written.
    """
    settings = settings or CompareSettings(max_seconds=10.0)
    clock = pick_clock(settings.clock, threads)

    def precise(ci) -> str | None:
        return "measured" if (ci.high - ci.low) <= precision * ci.ratio else None

    c, feeds, created = _measure_pair(model_path, threads, opt_level, settings, feeds, None, precise)
    data = {
        "format": FORMAT,
        "version": 1,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "model": {"path": str(model_path), "sha256": sha256_file(model_path),
                  "bytes": Path(model_path).stat().st_size},
        "inputs": feed_spec(feeds),
        "settings": {"threads": threads, "opt_level": opt_level, "clock": clock},
        "fingerprint": machine_fingerprint(threads, opt_level, clock),
        "reference": {"version": REFERENCE_VERSION, "sha256": reference_sha256()},
        "normalized": {"ratio": c.ci.ratio, "low": c.ci.low, "high": c.ci.high},
        "stats": {"model": c.a_stats.as_dict(), "reference": c.b_stats.as_dict(),
                  "session_create_ms": created, "seconds": c.seconds},
        "rounds": {"calls_per_block": c.calls, "model_ms": [round(x, 6) for x in c.a_blocks],
                   "reference_ms": [round(x, 6) for x in c.b_blocks]},
    }
    write_json(out, data)
    return data


def check_against_baseline(
    model_path: str | Path,
    baseline_path: str | Path,
    tolerance: float,
    threads: int | None = None,
    opt_level: str | None = None,
    max_seconds: float = 20.0,
    feeds: dict | None = None,
    settings: CompareSettings | None = None,
) -> Verdict:
    """Is ``model_path`` slower, relative to the reference workload, than the baseline says?

    ``threads``/``opt_level`` default to the baseline's. Inputs are rebuilt with the baseline's
    shapes unless ``feeds`` is given. Raises InputError (exit 2) for a missing or corrupt baseline
    or model file; never raises for a regression: the caller decides (``Verdict.failed()``).
    """
    base = load_baseline(baseline_path)
    threads = threads or base.settings.threads
    opt_level = opt_level or base.settings.opt_level
    # the baseline's clock, whatever the caller's settings say: wall and CPU times do not compare
    settings = replace(settings or CompareSettings(), tolerance=tolerance,
                       max_seconds=max_seconds, clock=base.settings.clock)
    feeds = feeds if feeds is not None else feeds_like(base.inputs)
    c, _, _ = _measure_pair(model_path, threads, opt_level, settings, feeds,
                            base.rounds.calls_per_block, None,
                            (base.rounds.model_ms, base.rounds.reference_ms))
    now = machine_fingerprint(threads, opt_level, pick_clock(settings.clock, threads))
    mismatch = fingerprint_mismatch(base.fingerprint, now)
    changed = "" if sha256_file(model_path) == base.model.get("sha256") else "; model file changed"
    message = (
        f"{c.verdict}: {model_path} is {c.ci.ratio:.3f}x its baseline {baseline_path} "
        f"relative to the reference workload ({c.ci.confidence:.0%} CI {c.ci.low:.3f}-"
        f"{c.ci.high:.3f}, tolerance {percent(tolerance)}; {c.rounds} rounds in {c.seconds:.1f} s"
        f"{changed}); machine: {format_fingerprint(now)}"
        + (f"; fingerprint differs from the baseline's: {'; '.join(mismatch)}" if mismatch else "")
    )
    return Verdict(c.verdict, c.ci.ratio, c.ci.low, c.ci.high, mismatch, message)


def check_vs(
    model_a: str | Path,
    model_b: str | Path,
    tolerance: float,
    threads: int = 1,
    opt_level: str = "all",
    max_seconds: float = 20.0,
    dims: dict[str, int] | None = None,
    inputs: str | Path | None = None,
    settings: CompareSettings | None = None,
) -> tuple[Verdict, Comparison]:
    """Is ``model_a`` slower than ``model_b``? Both measured interleaved in this process."""
    settings = settings or CompareSettings(tolerance=tolerance, max_seconds=max_seconds)
    c = compare_models(model_a, model_b, settings, threads, opt_level, dims, inputs)
    fp = machine_fingerprint(threads, opt_level, pick_clock(settings.clock, threads))
    message = (f"{describe(c, str(model_a), str(model_b), settings.tolerance)}; "
               f"machine: {format_fingerprint(fp)}")
    return Verdict(c.verdict, c.ci.ratio, c.ci.low, c.ci.high, [], message), c
