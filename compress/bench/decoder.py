"""Causal-LM decoders measured as a user feels them, on the files that ship, in one run.

Every model is a KV-cache decoder graph (``compress.export.kv_cache``). Quality on the test
windows (the same fixed WikiText-2 slice for every model): perplexity from the prefill logits,
next-token top-1 agreement with the reference (the teacher's fp32 decoder), and the greedy
continuations of held-out prompts compared with the reference's token for token. Speed at each
prompt length of ``contexts``: time to first token (the prefill) and decode tokens/s over
``new_tokens`` greedy steps after it, one session per model at the target's threads, models
interleaved round by round (drift hits them alike), on the calling thread's CPU clock at one
thread; medians over the rounds.

Public API::

    decoder_quality(path, layout, windows, reference_top1=None) -> (perplexity, top1 [N, S])
    greedy_all(path, layout, prompts, new_tokens) -> list of token lists
    time_decoders(paths, layout_of, contexts, new_tokens, rounds, threads, opt_level) -> timings
    benchmark_decoders(models, reference, windows, settings, target, out_dir, run_dir) -> rows
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from compress.artifacts import ModelArtifact, ModelMeasurement
from compress.bench.latency import pick_clock
from compress.common.files import atomic_write
from compress.export.kv_cache import KVCacheLayout, greedy_onnx, prefill_logits

PROMPT_TOKENS = 32  # each held-out prompt's length


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    m = x.max(-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(-1, keepdims=True))


def decoder_quality(path_or_session, layout: KVCacheLayout, windows: np.ndarray,
                    reference_top1: np.ndarray | None = None) -> tuple[float, np.ndarray, float | None]:
    """``(perplexity, top-1 next tokens [N, S], agreement with reference_top1 or None)`` of one
    decoder over ``windows`` [N, S] of token ids, each run as one prefill."""
    from compress.common.ort import make_session

    sess = make_session(path_or_session, 1) if isinstance(path_or_session, str | Path) \
        else path_or_session
    nll, count, top1 = 0.0, 0, []
    for ids in windows:
        logp = _log_softmax(prefill_logits(sess, layout, ids.tolist()))
        nll -= float(logp[np.arange(len(ids) - 1), ids[1:]].sum())
        count += len(ids) - 1
        top1.append(logp.argmax(-1))
    top1 = np.stack(top1)
    agree = None if reference_top1 is None else float((top1 == reference_top1).mean())
    return float(np.exp(nll / count)), top1, agree


def held_out_prompts(windows: np.ndarray, n: int, length: int = PROMPT_TOKENS) -> list[list[int]]:
    """``n`` prompts of ``length`` tokens spread evenly over the test stream."""
    stream = windows.reshape(-1)
    stride = max(length, (len(stream) - length) // max(n, 1))
    starts = [i * stride for i in range(n) if i * stride + length <= len(stream)]
    return [stream[s:s + length].tolist() for s in starts]


def greedy_all(path_or_session, layout: KVCacheLayout, prompts: list[list[int]],
               new_tokens: int) -> list[list[int]]:
    return [greedy_onnx(path_or_session, layout, p, new_tokens)[0] for p in prompts]


@dataclass
class DecoderTiming:
    """One model's timings: per context, the prefill ms and the decode step ms of each round."""

    ttft_ms: dict[int, list[float]] = field(default_factory=dict)
    step_ms: dict[int, list[float]] = field(default_factory=dict)

    def tokens_per_s(self, ctx: int, new_tokens: int) -> float:
        """The median over rounds of new_tokens / the round's decode time."""
        steps = np.asarray(self.step_ms[ctx]).reshape(-1, new_tokens)
        return float(np.median(1000.0 * new_tokens / steps.sum(1)))


def _one_round(sess, layout: KVCacheLayout, prompt: np.ndarray, new_tokens: int, tick
               ) -> tuple[float, list[float]]:
    past = [np.zeros((1, layout.num_kv_heads, 0, layout.head_dim), np.float32)
            for _ in layout.past_names]
    ids, steps, ttft = prompt[None], [], 0.0
    for step in range(new_tokens + 1):
        p, n = past[0].shape[2], ids.shape[1]
        feeds = {"input_ids": ids, "attention_mask": np.ones((1, p + n), np.int64),
                 "position_ids": np.arange(p, p + n, dtype=np.int64)[None]}
        feeds.update(zip(layout.past_names, past, strict=True))
        t0 = tick()
        out = sess.run(None, feeds)
        ms = (tick() - t0) / 1e6
        if step == 0:
            ttft = ms
        else:
            steps.append(ms)
        past, ids = out[1:], np.asarray([[int(out[0][0, -1].argmax())]], np.int64)
    return ttft, steps


def time_decoders(paths: list[Path], layouts: list[KVCacheLayout], contexts: list[int],
                  new_tokens: int, rounds: int, threads: int, opt_level: str,
                  seed: int = 0) -> tuple[list[DecoderTiming], str]:
    """Every model timed at every context, interleaved round by round, after one untimed
    round each; the same random prompt for every model in a round. Returns the timings and
    the clock (``cpu`` at one thread, else ``wall``)."""
    from compress.common.ort import make_session

    clock = pick_clock("auto", threads)
    tick = time.thread_time_ns if clock == "cpu" else time.perf_counter_ns
    sessions = [make_session(p, threads, opt_level) for p in paths]
    rng = np.random.default_rng(seed)
    vocab = min(lay.vocab_size for lay in layouts)
    out = [DecoderTiming() for _ in paths]
    for r in range(rounds + 1):
        for ctx in contexts:
            prompt = rng.integers(3, vocab, size=ctx, dtype=np.int64)
            for sess, lay, timing in zip(sessions, layouts, out, strict=True):
                ttft, steps = _one_round(sess, lay, prompt, new_tokens if r else 2, tick)
                if r:  # round 0 warms every session up
                    timing.ttft_ms.setdefault(ctx, []).append(ttft)
                    timing.step_ms.setdefault(ctx, []).extend(steps)
    return out, clock


@dataclass(frozen=True)
class DecoderBench:
    """What the benchmark stage's config asks (``compress.config.stages.BenchmarkConfig``)."""

    prompts: int
    new_tokens: int
    contexts: list[int]
    rounds: int
    max_windows: int | None


def layout_of(m: ModelArtifact) -> KVCacheLayout:
    return KVCacheLayout.from_manifest(m.meta["kv_cache"])


def benchmark_decoders(models: list[ModelArtifact], windows: np.ndarray, bench: DecoderBench,
                       target, out_dir: Path, run_dir: Path) -> list[ModelMeasurement]:
    """One row per model; ``models[0]`` is the reference (the teacher's fp32 decoder) that
    agreement and greedy match are measured against."""
    if bench.max_windows is not None:
        windows = windows[: bench.max_windows]
    prompts = held_out_prompts(windows, bench.prompts)
    quality, ref_top1, ref_greedy = [], None, None
    for m in models:
        ppl, top1, agree = decoder_quality(m.path, layout_of(m), windows, ref_top1)
        greedy = greedy_all(m.path, layout_of(m), prompts, bench.new_tokens)
        if ref_top1 is None:
            ref_top1, ref_greedy, agree = top1, greedy, 1.0
        same = [g == r for g, r in zip(greedy, ref_greedy, strict=True)]
        prefix = [_common_prefix(g, r) for g, r in zip(greedy, ref_greedy, strict=True)]
        quality.append({"perplexity": ppl, "top1_agreement": agree,
                        "greedy_match": float(np.mean(same)),
                        "greedy_prefix_tokens": float(np.mean(prefix))})
    timings, clock = time_decoders([m.path for m in models], [layout_of(m) for m in models],
                                   bench.contexts, bench.new_tokens, bench.rounds,
                                   target.threads, target.opt_level)
    rows = [_row(m, q, t, bench, clock, len(windows), target, out_dir, run_dir)
            for m, q, t in zip(models, quality, timings, strict=True)]
    for row in rows:
        row.speedup_vs_teacher = round(rows[0].p50 / row.p50, 3)
    return rows


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def _row(m: ModelArtifact, q: dict[str, float], t: DecoderTiming, bench: DecoderBench,
         clock: str, n_windows: int, target, out_dir: Path, run_dir: Path) -> ModelMeasurement:
    from compress.bench.stats import summarize

    head = bench.contexts[0]
    steps = np.asarray(t.step_ms[head])
    samples = out_dir / "latency" / f"{m.name}.npy"

    def save(p: Path) -> None:
        with open(p, "wb") as f:
            np.save(f, steps, allow_pickle=False)

    atomic_write(samples, save)
    stats = summarize(steps)
    tps = {f"ctx{c}": round(t.tokens_per_s(c, bench.new_tokens), 3) for c in bench.contexts}
    return ModelMeasurement(
        name=m.name, stage=m.meta.get("stage", "teacher"),
        path=str(Path(m.path).resolve().relative_to(run_dir.resolve())), sha256=m.sha256,
        bytes=Path(m.path).stat().st_size, params=m.meta.get("params"), macs=None,
        precision=m.precision, accuracy=q["perplexity"], split="test", quality=q,
        task="causal-lm", metric="perplexity", higher_is_better=False,
        latency_ms={k: round(getattr(stats, k), 5) for k in ("p50", "p90", "p99", "mean")},
        threads=target.threads, opt_level=target.opt_level, runs=len(steps),
        samples=str(samples.relative_to(out_dir)), throughput_per_s=tps[f"ctx{head}"],
        quality_samples=n_windows, clock=clock,
        ttft_ms={f"ctx{c}": round(float(np.median(t.ttft_ms[c])), 3) for c in bench.contexts},
        decode_tokens_per_s=tps)
