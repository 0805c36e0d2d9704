"""Device choice, made once per run."""

from __future__ import annotations

import random

import numpy as np
import torch

from compress.errors import InputError


def resolve_device(choice: str = "auto") -> torch.device:
    """``auto`` picks CUDA when present, else CPU. ``cuda`` without a GPU is a user error."""
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if choice == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda: no CUDA device is available on this machine")
    return torch.device(choice)


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch (every device) from one number."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def stage_seed(run_seed: int, name: str) -> int:
    """A stage's own seed from the run's seed and the stage's name (stable across processes)."""
    import hashlib

    digest = hashlib.sha256(f"{run_seed}:{name}".encode()).digest()
    return int.from_bytes(digest[:4], "little")
