"""Latency baselines: save a model's latency relative to a reference model, check it later.

The file holds, for several fresh processes, the block medians of k session pairs of the model and
a reference (the built-in workload of ``reference.py``, or a model the caller names, such as the
teacher), measured interleaved, plus a machine fingerprint. A pair's ratio is that of its fastest
blocks (``stats.fastest_ratio_ci``: the least disturbed by other jobs). A later check opens k pairs
again, in its own process, times them interleaved and compares the mean log ratio with the
stored one. The interval covers the spread between sessions and between fresh processes
(measured by the baseline, with floors from ``stats``), not only the noise inside one run: a
check of an unchanged file right after ``--latency-update`` must not read as a regression.
Version-1 files (one session, one process) are still read; their check assumes the floors.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import tempfile
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from compress.bench.baseline_file import FORMAT, PAIRS, PROCESSES, BaselineFile, load_baseline
from compress.bench.compare import (
    CompareSettings,
    Comparison,
    compare_models,
    describe,
    is_failure,
    percent,
)
from compress.bench.latency import feed_spec, pick_clock
from compress.bench.reference import REFERENCE_VERSION, reference_sha256
from compress.bench.sessions import PairRequest, PairRounds, in_fresh_process, run_pairs
from compress.bench.stats import (
    INCONCLUSIVE,
    ShiftCI,
    decide,
    shift_ci,
    spread_of,
    summarize,
)
from compress.common.files import sha256_file, write_json
from compress.errors import InputError

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


def _reference_record(reference: str | Path | None) -> dict:
    if reference is None:
        return {"kind": "builtin", "version": REFERENCE_VERSION, "sha256": reference_sha256()}
    from compress.bench.compare import check_onnx_file

    check_onnx_file(reference)
    return {"kind": "file", "path": str(reference), "sha256": sha256_file(reference)}


def _resolve_reference(base: BaselineFile, reference: str | Path | None,
                       baseline_path: str | Path) -> str | None:
    """The reference this check must time: the baseline's, and unchanged since."""
    saved = base.reference_file()
    if saved is None:
        if reference is not None:
            raise InputError(f"{baseline_path}: saved against the built-in reference workload, "
                             f"not {reference}: save the baseline again with that reference")
        return None
    path = Path(reference if reference is not None else saved)
    from compress.bench.compare import check_onnx_file

    check_onnx_file(path)
    if sha256_file(path) != base.reference.get("sha256"):
        raise InputError(f"{baseline_path}: reference {path} changed since the baseline was "
                         "saved: save the baseline again (pytest --latency-update, or compress "
                         "bench MODEL --save-baseline FILE --reference REF)")
    return str(path)


def save_baseline(model_path: str | Path, out: str | Path, threads: int = 1,
                  opt_level: str = "all", settings: CompareSettings | None = None,
                  feeds: dict | None = None, reference: str | Path | None = None,
                  processes: int = PROCESSES, pairs: int = PAIRS) -> dict:
    """Measure ``pairs`` session pairs (model, reference) in each of ``processes`` fresh
    processes, interleaved; write the baseline file atomically and return its JSON.

    ``settings.max_seconds`` is the measuring time of all processes together (start-up and
    warm-up not included). ``reference`` is a model file to time beside the model (the
    teacher, say); by default the built-in reference workload.
    """
    from compress.bench.compare import model_feeds, open_model

    settings = settings or CompareSettings(max_seconds=10.0)
    clock = pick_clock(settings.clock, threads)
    ref = _reference_record(reference)
    if feeds is None:
        feeds = model_feeds(open_model(model_path, threads, opt_level)[0])
    req = PairRequest(str(model_path), None if reference is None else str(reference),
                      feed_spec(feeds), threads, opt_level, clock, pairs,
                      max(0.3, settings.max_seconds / processes), min_rounds=settings.min_rounds)
    measured, seconds, _ = _in_processes(req, processes, feeds)
    data = _baseline_json(model_path, feeds, threads, opt_level, clock, ref, measured, seconds)
    write_json(out, data)
    return data


def _in_processes(req: PairRequest, processes: int, feeds: dict | None,
                  stop=None) -> tuple[list[list[PairRounds]], float, str | None]:
    """``req`` in up to ``processes`` fresh processes one after another, until ``stop`` (called
    with the groups so far) names a verdict. Later processes use the first one's block sizes."""
    measured: list[list[PairRounds]] = []
    seconds, verdict = 0.0, None
    with tempfile.TemporaryDirectory(prefix="compress-baseline.") as tmp:
        if feeds is not None:
            npz = Path(tmp) / "inputs.npz"
            np.savez(npz, **feeds)
            req = replace(req, inputs_npz=str(npz))
        for _ in range(processes):
            rounds, secs = in_fresh_process(req, timeout=120 + 10 * req.seconds)
            measured.append(rounds)
            seconds += secs
            req = replace(req, calls=(rounds[0].model_calls, rounds[0].reference_calls))
            verdict = stop(measured) if stop else None
            if verdict:
                break
    return measured, seconds, verdict


def _baseline_json(model_path, feeds, threads, opt_level, clock, ref, measured, seconds) -> dict:
    groups = [[p.ci() for p in g] for g in measured]
    process_sd, session_sd = spread_of(groups)
    logs = np.log([c.ratio for g in groups for c in g])
    half = 1.96 * float(np.sqrt(process_sd ** 2 / len(groups) + session_sd ** 2 / logs.size))
    return {
        "format": FORMAT,
        "version": 2,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "model": {"path": str(model_path), "sha256": sha256_file(model_path),
                  "bytes": Path(model_path).stat().st_size},
        "inputs": feed_spec(feeds),
        "settings": {"threads": threads, "opt_level": opt_level, "clock": clock},
        "fingerprint": machine_fingerprint(threads, opt_level, clock),
        "reference": ref,
        "normalized": {"ratio": float(np.exp(logs.mean())), "low": float(np.exp(logs.mean() - half)),
                       "high": float(np.exp(logs.mean() + half))},
        "spread": {"process": process_sd, "session": session_sd, "processes": len(groups),
                   "pairs": len(groups[0])},
        # of block medians (ms per call), all sessions together
        "stats": {"model": summarize([x for g in measured for p in g for x in p.model_ms]).as_dict(),
                  "reference": summarize([x for g in measured for p in g
                                          for x in p.reference_ms]).as_dict(),
                  "seconds": seconds},
        "sessions": [{"process": i, **p.as_dict()} for i, g in enumerate(measured) for p in g],
    }


# -- the check ---------------------------------------------------------------------------------

def judge(now: list[list[PairRounds]], base: BaselineFile, tolerance: float,
          confidence: float = 0.95) -> tuple[str | None, ShiftCI]:
    """The verdict (None while undecided) and interval of this check's pairs against ``base``;
    ``now`` holds the pairs of each process the check ran in."""
    ci = shift_ci([[p.ci(confidence) for p in g] for g in now], base.groups(), confidence)
    return decide(ci, tolerance), ci


def check_message(verdict: str, ci: ShiftCI, model_path: str | Path, baseline_path: str | Path,
                  base: BaselineFile, tolerance: float, seconds: float, changed: bool) -> str:
    """One line: verdict, the move against the baseline, its interval and what it covers."""
    ref = base.reference_file() or "the reference workload"
    old = ("; a version-1 baseline holds one session and no measured spread: rewrite it "
           "(pytest --latency-update, or --save-baseline) for a tighter check"
           if base.version == 1 else "")
    return (f"{verdict}: {model_path} is {ci.ratio:.3f}x its baseline {baseline_path} relative to "
            f"{ref} ({ci.confidence:.0%} CI {ci.low:.3f}-{ci.high:.3f} over {ci.sessions} session "
            f"pairs in {ci.processes} process(es) now and {ci.base_sessions} in "
            f"{ci.base_processes} then; spread "
            f"{ci.process_sd:.1%} between processes, {ci.session_sd:.1%} per session; tolerance "
            f"{percent(tolerance)}; {ci.rounds} rounds in {seconds:.1f} s"
            f"{'; model file changed' if changed else ''}{old})")


def check_against_baseline(
    model_path: str | Path,
    baseline_path: str | Path,
    tolerance: float,
    threads: int | None = None,
    opt_level: str | None = None,
    max_seconds: float = 20.0,
    feeds: dict | None = None,
    settings: CompareSettings | None = None,
    reference: str | Path | None = None,
    processes: int = 1,
) -> Verdict:
    """Is ``model_path`` slower, relative to its reference, than the baseline says?

    ``threads``/``opt_level`` default to the baseline's, ``reference`` to the baseline's
    reference. Inputs are rebuilt with the baseline's shapes unless ``feeds`` is given. Raises
    InputError (exit 2) for a missing or corrupt baseline, model or reference file; never raises
    for a regression: the caller decides (``Verdict.failed()``). ``processes`` > 1 spreads the
    check over that many fresh processes (``max_seconds`` shared among them), which averages out
    the offset one process has: a tighter interval, for about a second of start-up per process.
    """
    base = load_baseline(baseline_path)
    threads = threads or base.settings.threads
    opt_level = opt_level or base.settings.opt_level
    ref = _resolve_reference(base, reference, baseline_path)
    # the baseline's clock, whatever the caller's settings say: wall and CPU times do not compare
    settings = replace(settings or CompareSettings(), tolerance=tolerance,
                       max_seconds=max_seconds, clock=base.settings.clock)
    req = PairRequest(str(model_path), ref, base.inputs, threads, opt_level,
                      base.settings.clock, base.pairs(), max_seconds / processes,
                      calls=base.calls(), min_rounds=settings.min_rounds)
    if processes == 1:
        rounds, seconds, verdict = run_pairs(
            req, settings, lambda r: judge([r], base, tolerance, settings.confidence)[0], feeds)
        now = [rounds]
    else:
        def stop(groups):  # the first process alone says little about the process spread
            return judge(groups, base, tolerance, settings.confidence)[0] if len(groups) > 1 else None

        now, seconds, verdict = _in_processes(req, processes, feeds, stop)
    _, ci = judge(now, base, tolerance, settings.confidence)
    fp = machine_fingerprint(threads, opt_level, base.settings.clock)
    mismatch = fingerprint_mismatch(base.fingerprint, fp)
    changed = sha256_file(model_path) != base.model.get("sha256")
    message = (check_message(verdict or INCONCLUSIVE, ci, model_path, baseline_path, base,
                             tolerance, seconds, changed) + f"; machine: {format_fingerprint(fp)}"
               + (f"; fingerprint differs from the baseline's: {'; '.join(mismatch)}"
                  if mismatch else ""))
    return Verdict(verdict or INCONCLUSIVE, ci.ratio, ci.low, ci.high, mismatch, message)


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
