"""Session pairs of a model and its reference, timed interleaved; and a fresh process that does it.

A session's latency depends on more than its graph: two sessions of one file in one process gave
model/reference ratios 4-9% apart on a loaded AMD EPYC VM, each with a tight interval of its own.
So a baseline check opens k pairs (model, reference) and interleaves blocks of all 2k sessions in
one run: each pair's ratio (of its fastest blocks) is one sample of that spread, and every pair
saw the same load. A
baseline runs this in several fresh processes (``python -m compress.bench.sessions``) so that it
also measures how far a new process moves the ratio.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

from compress.bench.stats import RatioCI, fastest_ratio_ci
from compress.errors import InputError, StageError


@dataclass
class PairRounds:
    """The block medians (ms per call) of one session pair, round by round."""

    model_ms: list[float]
    reference_ms: list[float]
    model_calls: int
    reference_calls: int

    def ci(self, confidence: float = 0.95, n_boot: int = 1000, seed: int = 0) -> RatioCI:
        return fastest_ratio_ci(self.model_ms, self.reference_ms, confidence, n_boot, seed)

    def as_dict(self) -> dict:
        return {"model_calls": self.model_calls, "reference_calls": self.reference_calls,
                "model_ms": [round(x, 6) for x in self.model_ms],
                "reference_ms": [round(x, 6) for x in self.reference_ms]}


@dataclass(frozen=True)
class PairRequest:
    """What to measure: JSON-ready, so a fresh process can be asked for it."""

    model: str
    reference: str | None  # None: the built-in reference workload (reference.py)
    inputs: dict  # {name: {"dtype", "shape"}} (seeded values) unless ``inputs_npz``
    threads: int
    opt_level: str
    clock: str  # "cpu" or "wall"
    pairs: int
    seconds: float
    inputs_npz: str | None = None
    calls: tuple[int, int] | None = None  # (model, reference) calls per block; None: from warm-up
    min_rounds: int = 0  # rounds to run even past ``seconds`` (a baseline wants enough of them)


def _feeds(req: PairRequest) -> dict:
    from compress.bench.latency import feeds_like

    if req.inputs_npz is None:
        return feeds_like(req.inputs)
    with np.load(req.inputs_npz, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def open_pairs(req: PairRequest, feeds: dict | None = None) -> list[tuple[Callable, Callable]]:
    """``req.pairs`` fresh (model, reference) session pairs, as block runners. ``feeds``
    (arrays) replace the request's inputs when the caller has them in hand."""
    from compress.bench.compare import model_feeds, open_model, session_runner
    from compress.bench.reference import reference_model_bytes

    feeds = _feeds(req) if feeds is None else feeds
    ref_src = reference_model_bytes() if req.reference is None else req.reference
    out = []
    for _ in range(req.pairs):
        sm, _ = open_model(req.model, req.threads, req.opt_level)
        names = sorted(i.name for i in sm.get_inputs())
        if names != sorted(feeds):
            raise InputError(f"{req.model}: model inputs ({', '.join(names)}) differ from the "
                             f"inputs the baseline was measured with ({', '.join(sorted(feeds))})")
        sr, _ = open_model(ref_src, req.threads, req.opt_level)
        out.append((session_runner(sm, feeds, req.clock),
                    session_runner(sr, model_feeds(sr), req.clock)))
    return out


def run_pairs(req: PairRequest, settings, stop: Callable[[list[PairRounds]], str | None]
              | None = None, feeds: dict | None = None,
              clock: Callable[[], float] = time.perf_counter
              ) -> tuple[list[PairRounds], float, str | None]:
    """Warm every session, then rounds over all pairs until ``stop`` names a verdict or
    ``req.seconds`` pass (and ``req.min_rounds`` are done). Returns the pairs' rounds, the seconds measured and the verdict.

    Each block lasts about ``settings.block_ms`` for each model (time-balanced); the pair order
    rotates every round and A/B alternate (ABBA), so drift hits all sessions alike.
    """
    from compress.bench.compare import calls_per_block, warm_interleaved

    pairs = open_pairs(req, feeds)
    runners = [r for p in pairs for r in p]
    if req.calls is None:
        per_call = warm_interleaved(runners, settings)
        # one block length per model: the median over its sessions
        calls = (calls_per_block(float(np.median(per_call[0::2])), settings),
                 calls_per_block(float(np.median(per_call[1::2])), settings))
    else:
        warm_interleaved(runners, settings)
        calls = req.calls
    rounds = [PairRounds([], [], *calls) for _ in pairs]
    t0, look = clock(), settings.min_rounds
    while True:
        n = len(rounds[0].model_ms)
        for j in range(len(pairs)):
            i = (j + n) % len(pairs)
            (run_m, run_r), rec = pairs[i], rounds[i]
            if n % 2 == 0:
                xm, xr = run_m(calls[0]), run_r(calls[1])
            else:
                xr, xm = run_r(calls[1]), run_m(calls[0])
            rec.model_ms.append(float(np.median(xm)))
            rec.reference_ms.append(float(np.median(xr)))
        n, elapsed = n + 1, clock() - t0
        capped = (elapsed >= req.seconds and n >= req.min_rounds) or n >= settings.max_rounds
        if (n < look or elapsed < settings.min_seconds) and not capped:
            continue
        verdict = stop(rounds) if stop and n >= settings.min_rounds and \
            elapsed >= settings.min_seconds else None
        if verdict or capped:
            return rounds, clock() - t0, verdict
        look = max(n + 1, math.ceil(n * settings.look_growth))


def in_fresh_process(req: PairRequest, timeout: float) -> tuple[list[PairRounds], float]:
    """``run_pairs`` in a new Python process (no stop rule): the pairs' rounds and seconds."""
    proc = subprocess.run([sys.executable, "-m", "compress.bench.sessions"],
                          input=json.dumps(asdict(req)), capture_output=True, text=True,
                          timeout=timeout, check=False)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1]
        error = InputError if proc.returncode == 2 else StageError
        raise error(last.removeprefix("error: "))
    out = json.loads(proc.stdout)
    return [PairRounds(**p) for p in out["pairs"]], float(out["seconds"])


def main() -> int:
    """Worker: read a PairRequest as JSON on stdin, print the pairs' rounds as JSON."""
    import onnxruntime as ort

    from compress.bench.compare import CompareSettings
    from compress.errors import CompressError

    ort.set_default_logger_severity(4)
    raw = json.loads(sys.stdin.read())
    req = PairRequest(**{**raw, "calls": tuple(raw["calls"]) if raw.get("calls") else None})
    try:
        rounds, seconds, _ = run_pairs(req, CompareSettings(max_seconds=req.seconds))
    except CompressError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    json.dump({"pairs": [p.as_dict() for p in rounds], "seconds": seconds}, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())

