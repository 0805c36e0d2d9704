"""Mid-stage checkpoints of the training loop, and the training scope: what the engine knows about
the stage around a ``fit_`` call (where checkpoints go, whether to resume, how the teacher cache is
keyed), handed to ``fit_`` as an argument.

A checkpoint holds everything the loop needs to continue as if it had never stopped: weights,
optimizer, schedule, grad scaler, the RNG states of python, numpy and torch (and CUDA) of every
rank, the loader's generator, the position in the epoch, the best epoch so far and the history.
It is written atomically and read with ``weights_only=True`` (tensors and plain types only), and
it carries a key: a file written for other settings or another input model is never picked up.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from compress.common.files import atomic_write

if TYPE_CHECKING:
    from torch import nn

FORMAT = 2  # 2: the best epoch and the epoch's sums are named fields


@dataclass(frozen=True)
class EpochMetrics:
    """One finished epoch of a training loop, measured on the validation split.

    Attributes:
        loop: the loop's name (``FitPlan.desc``: "teacher", "distill", "prune step 1", "qat").
        epoch: the epoch just finished, from 1.
        epochs: the loop's epoch count.
        loss: the epoch's mean training loss.
        metric: the task's headline metric, e.g. "accuracy".
        value: its value on the validation split after this epoch.
        higher_is_better: the metric's direction.
        stage: the step that runs the loop (e.g. "01-distill"; the engine fills it).
        kind: that step's kind (e.g. "distill"; the engine fills it).
    """

    loop: str
    epoch: int
    epochs: int
    loss: float
    metric: str
    value: float
    higher_is_better: bool = True
    stage: str = ""
    kind: str = ""


@dataclass
class TrainingScope:
    """What the engine tells every ``fit_`` inside one stage (the defaults: none of it, as in a
    notebook).

    Attributes:
        work_dir: persistent folder named by the stage's resume key (checkpoints live here).
        key: the stage's resume key, stored in each checkpoint and checked on load.
        cache_dir: where teacher outputs are kept on disk (``RUN_DIR/.cache/teacher``).
        teacher: the teacher module these keys describe (identity-checked by ``fit_``).
        teacher_sha256: the teacher's weights hash.
        data_key: hash of the data config, its files and the split seed.
        resume: pick up a checkpoint left by a killed run (off under ``--no-resume``).
        on_epoch: called with each finished epoch's ``EpochMetrics`` (may raise to stop the
            stage: the exception leaves ``fit_`` as it is).
    """

    work_dir: Path | None = None
    key: str = ""
    cache_dir: Path | None = None
    teacher: Any = None
    teacher_sha256: str | None = None
    data_key: str | None = None
    resume: bool = True
    on_epoch: Callable[[EpochMetrics], None] | None = None


def state_sha256(model: nn.Module) -> str:
    """A hash of a module's state (names, shapes and bytes of every tensor)."""
    import torch

    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def rng_state() -> dict[str, Any]:
    """The RNG states of python, numpy, torch and CUDA as tensors and plain types."""
    import numpy as np
    import torch

    _, py, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": torch.tensor(py, dtype=torch.int64), "python_gauss": gauss,
        "numpy": torch.from_numpy(keys.astype(np.int64)), "numpy_meta": [name, pos, has_gauss, cached],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what ``rng_state`` captured."""
    import numpy as np
    import torch

    random.setstate((3, tuple(int(v) for v in state["python"].tolist()), state["python_gauss"]))
    name, pos, has_gauss, cached = state["numpy_meta"]
    np.random.set_state((name, state["numpy"].numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class Checkpointer:
    """One loop's checkpoint file in the stage's work folder, named from the loop's ``desc``."""

    def __init__(self, work_dir: Path | None, desc: str, key: str):
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", desc).strip("-") or "train"
        self.path = Path(work_dir) / f"ckpt-{slug}.pt" if work_dir is not None else None
        self.key = key

    @property
    def enabled(self) -> bool:
        return self.path is not None

    def save(self, state: dict[str, Any]) -> None:
        import torch

        from compress.train.distributed import world

        if self.path is None or not world().main:
            return
        payload = {"format": FORMAT, "key": self.key, **state}
        atomic_write(self.path, lambda p: torch.save(payload, p))

    def load(self) -> dict[str, Any] | None:
        """The checkpoint when one exists for this key, else None (a foreign or broken file is
        ignored and later overwritten)."""
        import torch

        if self.path is None or not self.path.is_file():
            return None
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception:  # noqa: BLE001 - an unreadable checkpoint only means starting over
            return None
        if not isinstance(state, dict) or state.get("format") != FORMAT or state.get("key") != self.key:
            return None
        return state

    def remove(self) -> None:
        if self.path is not None:
            self.path.unlink(missing_ok=True)
