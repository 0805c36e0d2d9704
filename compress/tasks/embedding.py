"""Sentence embedding: token ids in, one L2-normalised vector out, measured against the teacher.

Quality has no labels: it is how close the student's embeddings are to the teacher's on the same
sentences (mean and min cosine, recall@10 of the teacher's neighbours, Spearman correlation of
all pairwise similarities). Losses:

- :func:`pooled_loss`: ``cos_weight * (1 - cos) + mse_weight * MSE`` on the pooled embeddings;
  this is ``EmbeddingTask.distill_loss``.
- :func:`hidden_mse` and :func:`attention_kl`: layer-wise (TinyBERT / MiniLM style). They need
  both models' per-layer outputs, which the plain forward does not return. The training loop
  wires them as::

      s = student(**inputs, return_hidden=True, return_attentions=True)   # EmbedderOutput
      with torch.no_grad():
          t = teacher(**inputs, return_hidden=True, return_attentions=True)
      loss = layerwise_loss(s, t, inputs["attention_mask"], layer_map, weights, proj)

  ``layer_map`` is the student's kept teacher layers (``[1, 3, 5]`` for the default
  ``layer_drop_student``); attentions need models loaded with ``attn_implementation="eager"``
  (sdpa falls back with a warning otherwise). ``proj`` (``nn.Linear(d_student, d_teacher)``)
  is only needed when widths differ; its parameters go into the optimizer.

Sequence classification would plug in beside this: the same ``load_hf_model`` encoder with
``AutoModelForSequenceClassification`` (or ``SentenceEmbedder`` + ``nn.Linear`` head) and the
existing ``ClassificationTask`` constructed with ``input_names=("input_ids", "attention_mask")``;
only its collate must pad like :meth:`EmbeddingTask.collate` (a ``pad_batch`` call).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from compress.config.tasks import TASK_USES
from compress.errors import InputError, StageError
from compress.tasks.base import Task

if TYPE_CHECKING:
    import numpy as np
    import torch
    from torch.utils.data import Dataset

    from compress.config.train import SoftTargets


def pad_batch(items: Sequence[dict[str, torch.Tensor]], pad_id: int = 0,
              length: int | None = None) -> dict[str, torch.Tensor]:
    """Right-pad ``input_ids`` (with ``pad_id``) and ``attention_mask`` (with 0) to the longest
    item, or to ``length`` (longer items are cut)."""
    import torch

    width = length or max(len(it["input_ids"]) for it in items)
    ids = torch.full((len(items), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(items), width), dtype=torch.long)
    for row, it in enumerate(items):
        n = min(len(it["input_ids"]), width)
        ids[row, :n] = it["input_ids"][:n]
        mask[row, :n] = it["attention_mask"][:n]
    return {"input_ids": ids, "attention_mask": mask}


def pooled_loss(student: torch.Tensor, teacher: torch.Tensor, cos_weight: float = 1.0,
                mse_weight: float = 100.0) -> torch.Tensor:
    """``cos_weight * mean(1 - cos) + mse_weight * mean squared error`` of pooled embeddings."""
    import torch.nn.functional as F

    s, t = student.float(), teacher.float()
    cos = F.cosine_similarity(s, t, dim=-1).mean()
    return cos_weight * (1 - cos) + mse_weight * F.mse_loss(s, t)


def _check_map(layer_map: Sequence[int], n_student: int, n_teacher: int) -> None:
    if len(layer_map) != n_student or any(not 0 <= j < n_teacher for j in layer_map):
        raise InputError(f"layer_map must give one teacher layer in 0..{n_teacher - 1} per "
                         f"student layer ({n_student}); got {list(layer_map)}")


def hidden_mse(student_hidden: Sequence[torch.Tensor], teacher_hidden: Sequence[torch.Tensor],
               layer_map: Sequence[int], attention_mask: torch.Tensor, proj: Any = None,
               ) -> torch.Tensor:
    """Mean over mapped layers of the MSE between hidden states on unmasked tokens.

    ``*_hidden`` are HF ``hidden_states`` (the embedding output first, then one per layer);
    student layer ``i``'s output is compared with teacher layer ``layer_map[i]``'s. ``proj``
    maps student width to teacher width when they differ.
    """
    s_layers, t_layers = student_hidden[1:], teacher_hidden[1:]
    _check_map(layer_map, len(s_layers), len(t_layers))
    import torch

    mask = attention_mask.unsqueeze(-1).float()
    tokens = mask.sum()
    terms = []
    for i, j in enumerate(layer_map):
        s = s_layers[i].float() if proj is None else proj(s_layers[i].float())
        sq = ((s - t_layers[j].float()) ** 2 * mask).sum()
        terms.append(sq / (tokens * s.shape[-1]))
    return torch.stack(terms).mean()


def attention_kl(student_attn: Sequence[torch.Tensor], teacher_attn: Sequence[torch.Tensor],
                 layer_map: Sequence[int], attention_mask: torch.Tensor) -> torch.Tensor:
    """``KL(teacher || student)`` of attention distributions, per head and query token, averaged
    over heads, unmasked query tokens and mapped layers. Heads must match in number."""
    import torch

    _check_map(layer_map, len(student_attn), len(teacher_attn))
    query = attention_mask.float()[:, None, :]  # [B, 1, Lq]: broadcast over heads
    terms = []
    for i, j in enumerate(layer_map):
        s, t = student_attn[i].float(), teacher_attn[j].float()
        if s.shape != t.shape:
            raise InputError(f"attention shapes differ: student layer {i} {list(s.shape)}, "
                             f"teacher layer {j} {list(t.shape)} (heads must match)")
        kl = (t * (t.clamp_min(1e-12).log() - s.clamp_min(1e-12).log())).sum(-1)  # [B, H, Lq]
        terms.append((kl * query).sum() / (query.sum() * s.shape[1]))
    return torch.stack(terms).mean()


@dataclass
class LayerwiseWeights:
    """Weights of the loss terms: pooled cosine and MSE, hidden-state MSE, attention KL."""

    cos: float = 1.0
    mse: float = 100.0
    hidden: float = 1.0
    attention: float = 0.0


def layerwise_loss(student_out: Any, teacher_out: Any, attention_mask: torch.Tensor,
                   layer_map: Sequence[int], weights: LayerwiseWeights | None = None,
                   proj: Any = None) -> torch.Tensor:
    """Pooled loss plus the weighted hidden-state and attention terms, from two
    ``EmbedderOutput``s (``return_hidden=True``; ``return_attentions=True`` if weighted)."""
    w = weights or LayerwiseWeights()
    loss = pooled_loss(student_out.embedding, teacher_out.embedding, w.cos, w.mse)
    if w.hidden:
        loss = loss + w.hidden * hidden_mse(student_out.hidden_states, teacher_out.hidden_states,
                                            layer_map, attention_mask, proj)
    if w.attention:
        if student_out.attentions is None or teacher_out.attentions is None:
            raise StageError("attention loss needs both models called with return_attentions=True")
        loss = loss + w.attention * attention_kl(student_out.attentions, teacher_out.attentions,
                                                 layer_map, attention_mask)
    return loss


def _ranks(x: np.ndarray) -> np.ndarray:
    from scipy.stats import rankdata

    return rankdata(x)


def neighbour_recall(out: np.ndarray, ref: np.ndarray, k: int = 10) -> float:
    """Mean fraction of each row's ``k`` nearest neighbours under ``ref`` (cosine, itself
    excluded) that ``out`` also ranks among its ``k`` nearest (``k`` capped at n - 1)."""
    import numpy as np

    n = len(out)
    k = min(k, n - 1)
    if k < 1:
        return 1.0
    hits = 0
    sims = [_cosine_matrix(a) for a in (out, ref)]
    tops = []
    for s in sims:
        np.fill_diagonal(s, -np.inf)
        tops.append(np.argsort(-s, axis=1, kind="stable")[:, :k])
    for a, b in zip(*tops, strict=True):
        hits += len(set(a.tolist()) & set(b.tolist()))
    return hits / (n * k)


def _normalize(x: np.ndarray) -> np.ndarray:
    import numpy as np

    x = np.asarray(x, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def _cosine_matrix(x: np.ndarray) -> np.ndarray:
    x = _normalize(x)
    return x @ x.T


def pairwise_spearman(out: np.ndarray, ref: np.ndarray) -> float:
    """Spearman correlation of all pairwise cosine similarities (upper triangle) of ``out``
    with those of ``ref``."""
    import numpy as np

    iu = np.triu_indices(len(out), k=1)
    a, b = _ranks(_cosine_matrix(out)[iu]), _ranks(_cosine_matrix(ref)[iu])
    if len(a) < 2 or a.std() == 0 or b.std() == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


class EmbeddingTask(Task):
    """``(input_ids, attention_mask)`` in, a normalised ``sentence_embedding`` out.

    The output is not named ``embedding``: that name clashes with a value inside the dynamo
    exporter's graph and yields an invalid model (FACTS).
    """

    name = "embedding"
    metric = "cosine_mean"
    higher_is_better = True
    needs_reference = True
    sequence_axis = 1
    uses = TASK_USES["embedding"]  # no soft targets: the loss is the pooled cosine + MSE

    def __init__(self, pad_id: int = 0, cos_weight: float = 1.0, mse_weight: float = 100.0,
                 input_names: tuple[str, ...] = ("input_ids", "attention_mask"),
                 output_names: tuple[str, ...] = ("sentence_embedding",)):
        self.pad_id, self.cos_weight, self.mse_weight = pad_id, cos_weight, mse_weight
        self.input_names, self.output_names = tuple(input_names), tuple(output_names)

    def collate(self, items: list) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Pad the batch to its longest sentence (dynamic length)."""
        import torch

        inputs = pad_batch([it[0] for it in items], self.pad_id)
        return inputs, torch.tensor([int(it[1]) for it in items], dtype=torch.long)

    def arrays(self, ds: Dataset, limit: int | None = None,
               seq_len: int | None = None) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """ONNX Runtime feeds; ``seq_len`` pads (or cuts) every row to that length, for models
        exported with fixed shapes."""
        import numpy as np

        n = len(ds) if limit is None else min(limit, len(ds))
        items = [ds[i] for i in range(n)]
        inputs = pad_batch([it[0] for it in items], self.pad_id, seq_len)
        return {k: v.numpy() for k, v in inputs.items()}, np.array([it[1] for it in items])

    def loss(self, out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        raise StageError("the embedding task has no labels: it trains only against a teacher "
                         "(use distill)")

    def distill_loss(self, out: torch.Tensor, teacher_out: torch.Tensor, target: torch.Tensor,
                     kd: SoftTargets) -> torch.Tensor:
        return pooled_loss(out, teacher_out, self.cos_weight, self.mse_weight)

    def quality(self, out: np.ndarray, target: np.ndarray,
                reference: np.ndarray | None = None) -> dict[str, float]:
        import numpy as np

        if reference is None:
            raise StageError("embedding quality is measured against the teacher's embeddings: "
                             "no reference given")
        cos = (_normalize(out) * _normalize(reference)).sum(-1)
        return {"cosine_mean": float(np.mean(cos)), "cosine_min": float(np.min(cos)),
                "recall_at_10": neighbour_recall(out, reference, 10),
                "spearman": pairwise_spearman(out, reference)}

    def layerwise(self, layer_map: Sequence[int], weights: LayerwiseWeights) -> EmbeddingTask:
        """This task, distilling also hidden states (and attention) of the student's layers
        against the teacher layers in ``layer_map`` (TinyBERT / MiniLM style)."""
        return LayerwiseEmbeddingTask(self, layer_map, weights)


class LayerwiseEmbeddingTask(EmbeddingTask):
    """Training sees both models' per-layer outputs; evaluation and export see the embedding."""

    cacheable = False  # the teacher's outputs per layer are too large to keep per sample

    def __init__(self, base: EmbeddingTask, layer_map: Sequence[int], weights: LayerwiseWeights):
        super().__init__(base.pad_id, weights.cos, weights.mse, base.input_names, base.output_names)
        self.layer_map, self.weights = list(layer_map), weights

    def train_forward(self, model: Any, inputs: dict[str, torch.Tensor]) -> Any:
        out = model(inputs["input_ids"], inputs["attention_mask"], return_hidden=True,
                    return_attentions=self.weights.attention > 0)
        return out, inputs["attention_mask"]

    def distill_loss(self, out: Any, teacher_out: Any, target: torch.Tensor,
                     kd: SoftTargets) -> torch.Tensor:
        (s, mask), (t, _) = out, teacher_out
        return layerwise_loss(s, t, mask, self.layer_map, self.weights)
