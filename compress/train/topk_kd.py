"""Distillation of a causal LM from the teacher's top-k log-probabilities, cached once.

The teacher's next-token distribution at temperature ``T`` is kept per token as its ``k`` most
probable ids and their log-probabilities (``k`` about 32-64), computed over the full vocabulary.
The loss sees k + 1 buckets: the k ids, and a "rest" bucket that holds the probability outside
them, ``1 - sum(exp(values))`` for the teacher, and for the student the same outside mass from its
own full softmax. So a student that moves mass out of the teacher's top k pays for it even though
the cache does not say where the teacher's rest went::

    KL = T^2 * [ sum_i p_i (log p_i - log q_i) + p_rest (log p_rest - log q_rest) ]

averaged over the tokens the mask keeps; ``T^2`` keeps the gradient scale of temperatures alike.

Public API::

    teacher_topk(logits, k, temperature=1.0) -> (indices int32 [..., k], logprobs float32 [..., k])
    topk_kd_loss(student_logits, indices, logprobs, temperature=1.0, mask=None) -> scalar tensor
    hidden_mse(student_hidden, teacher_hidden, pairs, mask=None) -> scalar tensor
    save_topk(path, indices, logprobs, temperature) / load_topk(path) -> TopK   # .npz, atomic
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from compress.errors import InputError

if TYPE_CHECKING:
    import torch


def teacher_topk(logits: torch.Tensor, k: int, temperature: float = 1.0):
    """The ``k`` most probable ids at ``temperature`` and their log-probabilities (over the
    whole vocabulary, so the rest mass is ``1 - exp(logprobs).sum(-1)``)."""
    import torch

    logp = torch.log_softmax(logits.float() / temperature, dim=-1)
    values, indices = logp.topk(k, dim=-1)
    return indices.to(torch.int32), values


def _rest_log(logp_top: torch.Tensor) -> torch.Tensor:
    """log(1 - sum(exp(logp_top))), computed as log1p(-exp(logsumexp)) and floored at a tiny
    mass so that a teacher with all its mass in the top k gives 0 * log(tiny) = 0."""
    import torch

    top = torch.logsumexp(logp_top, dim=-1).clamp(max=-1e-7)
    return torch.log(-torch.expm1(top))


def topk_kd_loss(student_logits: torch.Tensor, indices: torch.Tensor, logprobs: torch.Tensor,
                 temperature: float = 1.0, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Forward KL(teacher || student) over the teacher's top k plus the rest bucket, times
    ``temperature ** 2``, averaged over tokens (``mask`` 1 on tokens to count).

    ``student_logits`` [..., vocab]; ``indices``, ``logprobs`` [..., k] from :func:`teacher_topk`
    at the same temperature.
    """
    import torch

    s = torch.log_softmax(student_logits.float() / temperature, dim=-1)
    q_top = s.gather(-1, indices.long())
    q_rest = _rest_log(q_top)
    p_top = logprobs.float()
    p_rest = _rest_log(p_top)
    kl = (p_top.exp() * (p_top - q_top)).sum(-1) + p_rest.exp() * (p_rest - q_rest)
    kl = kl * temperature ** 2
    if mask is None:
        return kl.mean()
    mask = mask.to(kl.dtype)
    return (kl * mask).sum() / mask.sum().clamp(min=1)


def hidden_mse(student_hidden: Sequence[torch.Tensor], teacher_hidden: Sequence[torch.Tensor],
               pairs: Sequence[tuple[int, int]], mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean squared error between paired hidden states, averaged over the pairs: each
    ``(student_i, teacher_j)`` compares ``student_hidden[i]`` with ``teacher_hidden[j]``
    ([B, S, H] each, the same width; ``mask`` [B, S] 1 on tokens to count)."""
    import torch

    losses = []
    for si, ti in pairs:
        err = (student_hidden[si].float() - teacher_hidden[ti].float()).pow(2).mean(-1)
        if mask is None:
            losses.append(err.mean())
        else:
            m = mask.to(err.dtype)
            losses.append((err * m).sum() / m.sum().clamp(min=1))
    return torch.stack(losses).mean()


@dataclass(frozen=True)
class TopK:
    """A cached slice of the teacher's top-k log-probabilities."""

    indices: np.ndarray  # int32 [..., k]
    logprobs: np.ndarray  # float32 [..., k]
    temperature: float


def save_topk(path: str | Path, indices, logprobs, temperature: float) -> Path:
    """Write a top-k cache as .npz (atomically): int32 ids, float32 log-probs, temperature."""
    from compress.common.files import atomic_write

    ids = np.asarray(indices, dtype=np.int32)
    vals = np.asarray(logprobs, dtype=np.float32)

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, indices=ids, logprobs=vals, temperature=np.float64(temperature))

    return atomic_write(path, write)


def load_topk(path: str | Path) -> TopK:
    """Read a cache that :func:`save_topk` wrote; a file that is not one is one line."""
    try:
        with np.load(path, allow_pickle=False) as z:
            top = TopK(z["indices"], z["logprobs"], float(z["temperature"]))
    except (OSError, ValueError, KeyError) as e:
        raise InputError(f"{path}: not a top-k teacher cache ({e})") from None
    if top.indices.shape != top.logprobs.shape:
        raise InputError(f"{path}: indices {top.indices.shape} and log-probs "
                         f"{top.logprobs.shape} differ in shape")
    return top
