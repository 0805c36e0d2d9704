"""Classification: logits out, top-1 accuracy, Hinton soft targets with a temperature."""

from __future__ import annotations

from typing import TYPE_CHECKING

from compress.config.tasks import TASK_USES
from compress.tasks.base import UNLABELED, Task

if TYPE_CHECKING:
    import numpy as np
    import torch

    from compress.config.train import SoftTargets


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor,
            temperature: float, alpha: float) -> torch.Tensor:
    """Per-batch KD loss. Labeled samples: ``alpha * T^2 * KL + (1 - alpha) * CE``.

    Unlabeled samples (label ``-1``) take the soft loss alone at full weight, so a transfer set
    is labeled by the teacher.
    """
    import torch
    import torch.nn.functional as F

    t = temperature
    log_p = F.log_softmax(student_logits / t, dim=1)
    q = F.softmax(teacher_logits / t, dim=1)
    soft = (q * (torch.log(q.clamp_min(1e-12)) - log_p)).sum(dim=1) * t * t
    labeled = labels >= 0
    hard = torch.zeros_like(soft)
    if labeled.any():
        hard[labeled] = F.cross_entropy(student_logits[labeled], labels[labeled], reduction="none")
    w_soft = torch.where(labeled, torch.full_like(soft, alpha), torch.ones_like(soft))
    return (w_soft * soft + (1 - alpha) * hard * labeled).mean()


class ClassificationTask(Task):
    """One image (or any tensor) in, class logits out."""

    name = "classification"
    metric = "accuracy"
    higher_is_better = True
    uses = TASK_USES["classification"]

    def __init__(self, input_names: tuple[str, ...] = ("input",),
                 output_names: tuple[str, ...] = ("logits",)):
        self.input_names, self.output_names = tuple(input_names), tuple(output_names)

    def augment(self, inputs: dict[str, torch.Tensor], shift: int) -> dict[str, torch.Tensor]:
        """Random translation by up to ``shift`` pixels of every image input."""
        if shift <= 0:
            return inputs

        return {k: random_shift(v, shift) if v.ndim == 4 and v.is_floating_point() else v
                for k, v in inputs.items()}

    def loss(self, out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        import torch.nn.functional as F

        return F.cross_entropy(out.float(), target, ignore_index=UNLABELED)

    def distill_loss(self, out: torch.Tensor, teacher_out: torch.Tensor, target: torch.Tensor,
                     kd: SoftTargets) -> torch.Tensor:
        return kd_loss(out.float(), teacher_out.float(), target, kd.temperature, kd.alpha)

    def quality(self, out: np.ndarray, target: np.ndarray,
                reference: np.ndarray | None = None) -> dict[str, float]:
        import numpy as np

        out = np.asarray(out, dtype=np.float64)
        pred = out.argmax(-1)
        labeled = np.asarray(target) >= 0
        q = {"accuracy": float((pred[labeled] == target[labeled]).mean()) if labeled.any() else 0.0}
        if labeled.any():
            # mean negative log-likelihood of the true class (the outputs are logits): a steady
            # number where accuracy on a few hundred samples ties
            z = out[labeled] - out[labeled].max(-1, keepdims=True)
            logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
            q["nll"] = float(-logp[np.arange(len(z)), np.asarray(target)[labeled]].mean())
        if reference is not None:
            q["top1_agreement"] = float((pred == np.asarray(reference).argmax(-1)).mean())
        return q


def random_shift(x: torch.Tensor, max_px: int) -> torch.Tensor:
    """Translate each image by up to ``max_px`` pixels (zero-padded with the border value)."""
    import torch
    import torch.nn.functional as F

    if max_px <= 0:
        return x
    n, _, h, w = x.shape
    padded = F.pad(x, (max_px,) * 4, mode="replicate")
    dy = torch.randint(0, 2 * max_px + 1, (n,), device=x.device)
    dx = torch.randint(0, 2 * max_px + 1, (n,), device=x.device)
    rows = (dy[:, None] + torch.arange(h, device=x.device)[None])[:, None, :, None]
    cols = (dx[:, None] + torch.arange(w, device=x.device)[None])[:, None, None, :]
    batch = torch.arange(n, device=x.device)[:, None, None, None]
    chans = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
    return padded[batch, chans, rows, cols]
