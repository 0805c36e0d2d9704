"""The task seam: what differs between kinds of model (classification, embedding, ...).

A task owns the example inputs (a dict of named tensors), the losses for plain training and for
distillation, the quality metrics with the headline one and its direction, what export parity
compares and which config keys it reads (``uses``, torch-free in ``compress.config.tasks``), and
the ONNX input and output names. Stages ask the task; they never assume argmax. Dataset items are
``(inputs: dict[str, Tensor], target)`` everywhere.

Torch and numpy are imported inside the methods, so this module stays importable by the
torch-free config.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, ClassVar

from compress.config.tasks import TaskUses

if TYPE_CHECKING:
    import numpy as np
    import torch
    from torch import nn
    from torch.utils.data import Dataset

    from compress.config.train import SoftTargets


UNLABELED = -1  # the target of a sample without a label (a transfer set): soft loss only


class Task(ABC):
    """One kind of model. Subclasses set the names and implement the losses and metrics."""

    name: ClassVar[str]
    metric: ClassVar[str]  # headline quality key, reported as ``accuracy`` in report.json
    higher_is_better: ClassVar[bool] = True
    needs_reference: ClassVar[bool] = False  # quality is measured against the teacher's outputs
    uses: ClassVar[TaskUses] = TaskUses()  # config keys it reads; what export parity compares
    generates: ClassVar[bool] = False  # a causal LM: KV-cache export, decoder quantize and bench
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]

    # -- data ---------------------------------------------------------------------------------

    def collate(self, items: list) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Stack dataset items into one batch: ``(inputs, targets)``."""
        from torch.utils.data import default_collate

        return default_collate(items)

    def loader(self, ds: Dataset, batch_size: int, shuffle: bool = False, seed: int = 0):
        import torch
        from torch.utils.data import DataLoader

        g = torch.Generator().manual_seed(seed)
        return DataLoader(ds, batch_size=batch_size, shuffle=shuffle, generator=g,
                          collate_fn=self.collate)

    def example(self, ds: Dataset, batch: int = 1) -> dict[str, torch.Tensor]:
        """The first ``batch`` items of ``ds`` as named inputs (for export and tracing)."""
        inputs, _ = self.collate([ds[i] for i in range(min(batch, len(ds)))])
        return inputs

    sequence_axis: ClassVar[int | None] = None  # the inputs' length axis, for variable-length data

    def lengths(self, ds: Dataset) -> list[int] | None:
        """Each item's length along the sequence axis (its first input's), or None for a task
        whose inputs all have one shape."""
        if self.sequence_axis is None:
            return None
        name = self.input_names[0]
        # axis 1 of a batch is axis 0 of an item
        return [int(ds[i][0][name].shape[self.sequence_axis - 1]) for i in range(len(ds))]

    def arrays(self, ds: Dataset, limit: int | None = None,
               seq_len: int | None = None) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """All of ``ds`` (or its first ``limit`` items) as ONNX Runtime feeds and targets
        (``seq_len``: pad or cut sequence inputs to it; tasks without sequences ignore it)."""
        import numpy as np

        n = len(ds) if limit is None else min(limit, len(ds))
        inputs, targets = self.collate([ds[i] for i in range(n)])
        return {k: v.numpy() for k, v in inputs.items()}, np.asarray(targets.numpy())

    def augment(self, inputs: dict[str, torch.Tensor], shift: int) -> dict[str, torch.Tensor]:
        """Random training-time augmentation of a batch (none by default)."""
        return inputs

    # -- model calls --------------------------------------------------------------------------

    def forward(self, model: nn.Module, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """The model's output tensor for a batch of named inputs, passed positionally in their order
        (as ONNX export passes them)."""
        out = model(*inputs.values())
        return out[0] if isinstance(out, tuple | list) else out

    def train_forward(self, model: nn.Module, inputs: dict[str, torch.Tensor]) -> Any:
        """What training losses see: the output tensor by default; a task whose distillation also
        matches inner states (hidden states, attention) returns more here."""
        return self.forward(model, inputs)

    cacheable: ClassVar[bool] = True  # train_forward of a frozen teacher may be cached per sample

    @abstractmethod
    def loss(self, out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Training loss without a teacher."""

    @abstractmethod
    def distill_loss(self, out: torch.Tensor, teacher_out: torch.Tensor, target: torch.Tensor,
                     kd: SoftTargets) -> torch.Tensor:
        """Training loss against the teacher's outputs."""

    # -- quality ------------------------------------------------------------------------------

    @abstractmethod
    def quality(self, out: np.ndarray, target: np.ndarray,
                reference: np.ndarray | None = None) -> dict[str, float]:
        """Every metric of the task, ``self.metric`` among them."""

    def headline(self, quality: dict[str, float]) -> float:
        return quality[self.metric]

    def better(self, a: float, b: float) -> bool:
        """Whether headline value ``a`` beats ``b``."""
        return a > b if self.higher_is_better else a < b

    def model_spec(self, spec: dict[str, Any], num_classes: int | None) -> dict[str, Any]:
        """The builder spec of the teacher from the config's (a task with its own head adds it)."""
        return spec

    def describe(self) -> dict[str, Any]:
        return {"task": self.name, "metric": self.metric, "higher_is_better": self.higher_is_better,
                "inputs": list(self.input_names), "outputs": list(self.output_names)}


def run_torch(task: Task, model: nn.Module, ds: Dataset, device: Any = "cpu",
              batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """Outputs and targets of ``model`` over ``ds`` (eval mode, no grad), on the CPU."""
    import torch

    model.eval()
    outs, targets = [], []
    with torch.no_grad():
        for inputs, target in task.loader(ds, batch_size):
            inputs = {k: v.to(device) for k, v in inputs.items()}
            outs.append(task.forward(model, inputs).float().cpu())
            targets.append(target)
    return torch.cat(outs), torch.cat(targets)


def evaluate(task: Task, model: nn.Module, ds: Dataset, device: Any = "cpu",
             reference: nn.Module | None = None) -> dict[str, float]:
    """The task's quality metrics of ``model`` on ``ds`` in PyTorch (``reference``: the teacher,
    for tasks measured against it)."""
    out, target = run_torch(task, model, ds, device)
    ref = run_torch(task, reference, ds, device)[0].numpy() if reference is not None else None
    return task.quality(out.numpy(), target.numpy(), ref)


def ort_arrays(task: Task, ds: Dataset, sess, limit: int | None = None,
               seq_len: int | None = None) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Feeds for ``sess``: a model exported with a fixed sequence length gets inputs of that
    length; otherwise ``seq_len`` (or each batch's own padding) decides."""
    axis = task.sequence_axis
    if axis is not None:
        shape = sess.get_inputs()[0].shape
        fixed = shape[axis] if len(shape) > axis and isinstance(shape[axis], int) else None
        seq_len = fixed or seq_len
    return task.arrays(ds, limit, seq_len) if seq_len else task.arrays(ds, limit)
