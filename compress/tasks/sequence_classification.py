"""Sequence classification: token ids and mask in, class logits out, top-1 accuracy.

The teacher is an HF encoder with a linear head on its mean-pooled tokens
(``compress.models.hf.SequenceClassifier``), fine-tuned on labelled text by the teacher step; the
student is a layer-drop copy of the fine-tuned teacher, head included. Distillation is Hinton's
soft targets on the logits (``kd_loss``: ``alpha * T^2 * KL + (1 - alpha) * CE``, unlabeled
transfer text on the soft term alone) plus, with ``distill.hidden_weight``, the hidden-state MSE
between each student layer and the teacher layer it was copied from (and the attention KL with
``attention_weight``). Batches are padded to their longest sentence, as for embeddings.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from compress.config.tasks import TASK_USES
from compress.tasks.classification import ClassificationTask, kd_loss

if TYPE_CHECKING:
    import numpy as np
    import torch
    from torch.utils.data import Dataset

    from compress.config.train import SoftTargets
    from compress.tasks.embedding import LayerwiseWeights


class SequenceClassificationTask(ClassificationTask):
    """``(input_ids, attention_mask)`` in, ``logits`` out; labels are class ids (-1: unlabeled)."""

    name = "sequence-classification"
    uses = TASK_USES["sequence-classification"]
    sequence_axis = 1
    # the embedding task's pooled-loss weights, which the distill stage reads when it builds the
    # layer-wise variant; a classifier's loss has no pooled-embedding term
    cos_weight: ClassVar[float] = 0.0
    mse_weight: ClassVar[float] = 0.0

    def __init__(self, pad_id: int = 0, input_names: tuple[str, ...] = ("input_ids", "attention_mask"),
                 output_names: tuple[str, ...] = ("logits",)):
        super().__init__(input_names, output_names)
        self.pad_id = pad_id

    def augment(self, inputs: dict[str, torch.Tensor], shift: int) -> dict[str, torch.Tensor]:
        return inputs  # no image augmentation for token ids

    def collate(self, items: list) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Pad the batch to its longest sentence; targets are the labels."""
        import torch

        from compress.tasks.embedding import pad_batch

        inputs = pad_batch([it[0] for it in items], self.pad_id)
        return inputs, torch.tensor([int(it[1]) for it in items], dtype=torch.long)

    def arrays(self, ds: Dataset, limit: int | None = None,
               seq_len: int | None = None) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """ONNX Runtime feeds padded to the longest item, or to ``seq_len`` (fixed shapes)."""
        import numpy as np

        from compress.tasks.embedding import pad_batch

        n = len(ds) if limit is None else min(limit, len(ds))
        items = [ds[i] for i in range(n)]
        inputs = pad_batch([it[0] for it in items], self.pad_id, seq_len)
        return {k: v.numpy() for k, v in inputs.items()}, np.array([int(it[1]) for it in items])

    def model_spec(self, spec: dict[str, Any], num_classes: int | None) -> dict[str, Any]:
        """An hf encoder gets a classification head with one logit per class of the data."""
        if spec.get("hf") and num_classes:
            return {**spec, "num_labels": int(num_classes)}
        return spec

    def layerwise(self, layer_map: Sequence[int], weights: LayerwiseWeights) -> SequenceClassificationTask:
        """This task, distilling also the hidden states (and attention) of the student's layers
        against the teacher layers in ``layer_map``."""
        return LayerwiseSequenceTask(self, layer_map, weights.hidden, weights.attention)


class LayerwiseSequenceTask(SequenceClassificationTask):
    """Training sees both models' logits and per-layer states; evaluation and export see logits."""

    cacheable = False  # the teacher's per-layer states are too large to keep per sample

    def __init__(self, base: SequenceClassificationTask, layer_map: Sequence[int],
                 hidden: float, attention: float = 0.0):
        super().__init__(base.pad_id, base.input_names, base.output_names)
        self.layer_map, self.hidden, self.attention = list(layer_map), hidden, attention

    def train_forward(self, model: Any, inputs: dict[str, torch.Tensor]) -> Any:
        out = model(inputs["input_ids"], inputs["attention_mask"], return_hidden=True,
                    return_attentions=self.attention > 0)
        return out, inputs["attention_mask"]

    def distill_loss(self, out: Any, teacher_out: Any, target: torch.Tensor,
                     kd: SoftTargets) -> torch.Tensor:
        from compress.tasks.embedding import attention_kl, hidden_mse

        (s, mask), (t, _) = out, teacher_out
        loss = kd_loss(s.logits.float(), t.logits.float(), target, kd.temperature, kd.alpha)
        if self.hidden:
            loss = loss + self.hidden * hidden_mse(s.hidden_states, t.hidden_states,
                                                   self.layer_map, mask)
        if self.attention:
            loss = loss + self.attention * attention_kl(s.attentions, t.attentions,
                                                        self.layer_map, mask)
        return loss
