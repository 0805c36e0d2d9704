"""Which quantized copy of a causal LM's decoder to keep: each precision of
``compress.quant.decoder`` judged against the fp32 graph on the validation windows (perplexity)
and timed beside it (decode tokens/s, interleaved, as the target says). A precision is kept only
if it stays within the perplexity budget and is faster by ``min_speedup``; of those, the
fastest. ``choose_decoder`` does the work without a pipeline; the quantize stage calls it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from compress.bench.decoder import decoder_quality, time_decoders
from compress.export.kv_cache import KVCacheLayout
from compress.quant.decoder import quantize_decoder
from compress.records.causal_lm import DecoderQuantizeReport, DecoderTrial


@dataclass(frozen=True)
class DecoderBudget:
    """What a precision must meet to be kept, and how speed is timed."""

    max_perplexity_ratio: float = 1.05
    min_speedup: float = 1.05
    context: int = 128
    new_tokens: int = 32
    rounds: int = 3
    threads: int = 1
    opt_level: str = "all"


@dataclass
class DecoderChoice:
    kept: str  # fp32, or the precision kept
    paths: dict[str, Path]  # every precision written
    report: DecoderQuantizeReport

    @property
    def any_within_budget(self) -> bool:
        return any(t.within_budget for t in self.report.trials)


def choose_decoder(fp32: Path, layout: KVCacheLayout, precisions: list[str],
                   val_windows: np.ndarray, budget: DecoderBudget, out_dir: Path) -> DecoderChoice:
    """Write ``out_dir/model.<precision>.onnx`` for each precision and judge them."""
    paths = {p: quantize_decoder(fp32, out_dir / f"model.{p}.onnx", p) for p in precisions}
    base_ppl = decoder_quality(fp32, layout, val_windows)[0]
    ppl = {p: decoder_quality(path, layout, val_windows)[0] for p, path in paths.items()}
    timings, _ = time_decoders([fp32, *paths.values()], [layout] * (len(paths) + 1),
                               [budget.context], budget.new_tokens, budget.rounds,
                               budget.threads, budget.opt_level)
    tps = [t.tokens_per_s(budget.context, budget.new_tokens) for t in timings]
    trials = []
    for (p, path), rate in zip(paths.items(), tps[1:], strict=True):
        ratio = ppl[p] / base_ppl
        trials.append(DecoderTrial(
            precision=p, bytes=path.stat().st_size, perplexity=round(ppl[p], 4),
            perplexity_ratio=round(ratio, 4), tokens_per_s=round(rate, 3),
            speedup=round(rate / tps[0], 3), within_budget=ratio <= budget.max_perplexity_ratio,
            faster=rate / tps[0] >= budget.min_speedup))
    kept, reason = _pick(trials, budget)
    report = DecoderQuantizeReport(
        fp32_perplexity=round(base_ppl, 4), fp32_tokens_per_s=round(tps[0], 3), trials=trials,
        kept=kept, reason=reason, context=budget.context, val_windows=len(val_windows),
        threads=budget.threads)
    return DecoderChoice(kept, paths, report)


def _pick(trials: list[DecoderTrial], budget: DecoderBudget) -> tuple[str, str]:
    good = [t for t in trials if t.within_budget and t.faster]
    if good:
        best = max(good, key=lambda t: t.tokens_per_s)
        return best.precision, (f"{best.precision}: {best.speedup:g}x the fp32 decode rate at "
                                f"perplexity x{best.perplexity_ratio:g} (budget "
                                f"x{budget.max_perplexity_ratio:g}), the fastest within it")
    why = "; ".join(
        f"{t.precision}: perplexity x{t.perplexity_ratio:g}"
        + ("" if t.within_budget else f" > x{budget.max_perplexity_ratio:g}")
        + f", {t.speedup:g}x speed" + ("" if t.faster else f" < {budget.min_speedup:g}x")
        for t in trials)
    return "fp32", f"fp32 kept: {why}"
