"""Causal language modelling: a decoder that predicts each next token, distilled from an LLM
teacher and shipped as one KV-cache graph (``compress.export.kv_cache``).

A dataset item is a window of token ids: ``({"input_ids": [S]}, ids [S])``; the target is the
window itself, each position predicting the next. The headline quality is perplexity (lower is
better); measured against the teacher, the next-token top-1 agreement. Stages that differ for a
generating model (export, quantize, benchmark, package) ask ``generates``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from compress.config.tasks import TASK_USES
from compress.tasks.base import Task

if TYPE_CHECKING:
    import numpy as np
    import torch
    from torch import nn

    from compress.config.train import SoftTargets


def log_softmax_np(x: np.ndarray) -> np.ndarray:
    import numpy as np

    x = x.astype(np.float64)
    m = x.max(-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(-1, keepdims=True))


def next_token_nll(logits: np.ndarray, ids: np.ndarray) -> tuple[float, int]:
    """``(summed negative log-likelihood, tokens counted)`` of ``ids`` [..., S] under
    ``logits`` [..., S, V]: position t predicts token t + 1."""
    import numpy as np

    logp = log_softmax_np(logits[..., :-1, :])
    picked = np.take_along_axis(logp, ids[..., 1:, None].astype(np.int64), -1)[..., 0]
    return float(-picked.sum()), int(picked.size)


class CausalLMTask(Task):
    name = "causal-lm"
    metric = "perplexity"
    higher_is_better = False
    needs_reference = True  # agreement is measured against the teacher's next tokens
    uses = TASK_USES["causal-lm"]
    generates: ClassVar[bool] = True
    input_names = ("input_ids",)
    output_names = ("logits",)

    def forward(self, model: nn.Module, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return model(input_ids=inputs["input_ids"], use_cache=False).logits

    def loss(self, out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Next-token cross-entropy of ``out`` [B, S, V] on the window ``target`` [B, S]."""
        import torch

        return torch.nn.functional.cross_entropy(out[:, :-1].flatten(0, 1).float(),
                                                 target[:, 1:].flatten())

    def distill_loss(self, out: torch.Tensor, teacher_out: torch.Tensor, target: torch.Tensor,
                     kd: SoftTargets) -> torch.Tensor:
        """``alpha`` x forward KL at the temperature on the full vocabulary (times T^2) plus
        ``1 - alpha`` x next-token cross-entropy. The distill stage reads a top-k cache instead
        (``compress.train.topk_kd``); this is the loss with the whole teacher at hand."""
        import torch

        t = kd.temperature
        p = torch.log_softmax(teacher_out.float() / t, -1)
        q = torch.log_softmax(out.float() / t, -1)
        kl = (p.exp() * (p - q)).sum(-1).mean() * t * t
        return kd.alpha * kl + (1 - kd.alpha) * self.loss(out, target)

    def quality(self, out: np.ndarray, target: np.ndarray,
                reference: np.ndarray | None = None) -> dict[str, float]:
        """Perplexity of ``target`` windows under ``out`` logits; with the teacher's logits
        ``reference``, the share of positions whose top-1 next token equals the teacher's."""
        import math

        nll, n = next_token_nll(out, target)
        q = {"perplexity": math.exp(nll / n)}
        if reference is not None:
            q["top1_agreement"] = float((out.argmax(-1) == reference.argmax(-1)).mean())
        return q
