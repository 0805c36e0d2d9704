"""An llm teacher as the training loop sees it: a frozen table from the student's token ids of a
text to the LLM's label log-probs of that text.

The LLM labelled every text once in the teacher step (``labels.npz``); its tokenizer is not the
student's, so only the label distribution crosses over. ``LabelTable.forward(input_ids,
attention_mask)`` looks each row up by its unpadded ids, so the loop's teacher-output cache
(``compress.train.teacher_cache``: keyed by the teacher file's hash, which follows the labels)
and Hinton's KD loss take it as they take any frozen teacher: softmax(log p / T) is p at T = 1.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch
from torch import nn

from compress.errors import InputError


class LabelTable(nn.Module):
    """``forward(input_ids, attention_mask)`` -> ``[B, labels]`` log-probs, looked up per row."""

    def __init__(self, keys: list[tuple[int, ...]], logprobs: np.ndarray):
        super().__init__()
        self.index = {}
        for i, k in enumerate(keys):
            self.index.setdefault(k, i)  # texts equal after truncation: the first one's label
        self.register_buffer("table", torch.from_numpy(np.asarray(logprobs, dtype=np.float32)))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        rows = []
        for ids, mask in zip(input_ids.tolist(), attention_mask.tolist(), strict=True):
            key = tuple(i for i, m in zip(ids, mask, strict=True) if m)
            if key not in self.index:
                raise InputError("the llm teacher has no label for a training text (the data "
                                 "changed since the teacher step; run with --no-resume)")
            rows.append(self.index[key])
        return self.table[torch.tensor(rows, device=self.table.device)]


def _keys(ds) -> list[tuple[int, ...]]:
    out = []
    for i in range(len(ds)):
        inputs = ds[i][0]
        ids, mask = inputs["input_ids"].tolist(), inputs["attention_mask"].tolist()
        out.append(tuple(t for t, m in zip(ids, mask, strict=True) if m))
    return out


def label_table(labels_file, data) -> tuple[LabelTable, int]:
    """The table over every split the LLM labelled, and the number of labels."""
    from compress.tasks.llm_label_file import read_labels

    lf = read_labels(labels_file)
    keys, rows = [], []
    for name in ("train", "transfer", "val", "test"):
        ds = getattr(data, name)
        if ds is None:
            continue
        keys += _keys(ds)
        rows.append(lf.of(list(ds.sentences)))
    return LabelTable(keys, np.concatenate(rows)).eval(), len(lf.labels)


class _Relabelled:
    """A split whose targets are the LLM's top-1 label: validation picks the student's epoch by
    agreement with the LLM, so gold labels stay for measuring only."""

    def __init__(self, base, labels: np.ndarray):
        self.base, self.labels = base, [int(y) for y in labels]
        self.sentences = getattr(base, "sentences", None)

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i):
        return self.base[i][0], torch.tensor(self.labels[i])


def llm_val(data, labels_file):
    """``data`` with its val split relabelled by the LLM (top-1 of the configured labels)."""
    from compress.tasks.llm_label_file import read_labels

    lf = read_labels(labels_file)
    top1 = lf.of(list(data.val.sentences)).argmax(-1)
    return replace(data, val=_Relabelled(data.val, top1))
