"""Which decoder precision the causal-lm quantize stage keeps: the fastest of those within the
perplexity budget and faster by min_speedup, else fp32 with the figures that refused each."""

from __future__ import annotations

from compress.quant.decoder_choice import DecoderBudget, _pick
from compress.records.causal_lm import DecoderTrial


def _trial(precision: str, ratio: float, speedup: float, budget: DecoderBudget) -> DecoderTrial:
    return DecoderTrial(precision=precision, bytes=1, perplexity=10 * ratio, perplexity_ratio=ratio,
                        tokens_per_s=20 * speedup, speedup=speedup,
                        within_budget=ratio <= budget.max_perplexity_ratio,
                        faster=speedup >= budget.min_speedup)


def test_the_fastest_within_the_budget_is_kept():
    b = DecoderBudget(max_perplexity_ratio=1.05, min_speedup=1.05)
    trials = [_trial("int8", 1.01, 1.9, b), _trial("int4", 1.3, 2.6, b),
              _trial("int8-dynamic", 1.02, 1.5, b)]
    assert _pick(trials, b) == ("int8", "int8: 1.9x the fp32 decode rate at perplexity x1.01 "
                                        "(budget x1.05), the fastest within it")


def test_fp32_is_kept_when_none_is_both_accurate_and_faster():
    b = DecoderBudget(max_perplexity_ratio=1.05, min_speedup=1.05)
    trials = [_trial("int8", 1.01, 0.98, b), _trial("int4", 1.3, 2.6, b)]
    assert _pick(trials, b) == ("fp32", "fp32 kept: int8: perplexity x1.01, 0.98x speed < 1.05x; "
                                        "int4: perplexity x1.3 > x1.05, 2.6x speed")
