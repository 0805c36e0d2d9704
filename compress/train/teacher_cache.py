"""The frozen teacher as the training loop sees it, and its outputs cached (offline KD).

Without random augmentation or hints the teacher's outputs repeat every epoch. When the engine
names the teacher and the data (the training scope), the outputs are computed once per (teacher
sha256, data, preprocessing, top-k) and kept memory-mapped under ``RUN_DIR/.cache/teacher/KEY/``,
shared by epochs, stages and later runs; a changed key is a new folder. Without those keys (a
notebook), they are cached in memory for the epochs of one call. ``teacher_topk`` keeps the k
largest logits per sample plus the mean of the rest, which the loss sees in their place.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from compress.common.files import sha256_json
from compress.train import distributed as dist

if TYPE_CHECKING:
    import torch
    from torch import nn
    from torch.utils.data import Dataset

    from compress.tasks.base import Task

FORMAT = 1


class Taps:
    """Forward hooks that keep the outputs of named modules."""

    def __init__(self, model: nn.Module, names: list[str]):
        modules = dict(model.named_modules())
        missing = [n for n in names if n not in modules]
        if missing:
            raise KeyError(missing[0])
        self.out: dict[str, torch.Tensor] = {}
        self.handles = [
            modules[n].register_forward_hook(lambda _m, _i, o, n=n: self.out.__setitem__(n, o))
            for n in names
        ]

    def close(self) -> None:
        for h in self.handles:
            h.remove()


class Indexed:
    """Yields ``(inputs, target, index)`` so per-sample teacher outputs can be looked up."""

    def __init__(self, base: Dataset):
        self.base = base

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i):
        inputs, target = self.base[i][:2]
        return inputs, target, i


class MemoryCache:
    """Teacher outputs per training sample, filled on first sight, for one ``fit_`` call."""

    def __init__(self, n: int):
        import torch

        self.n, self.store, self.have = n, None, torch.zeros(n, dtype=torch.bool)

    def get(self, idx: torch.Tensor, compute) -> torch.Tensor:
        import torch

        if self.store is not None and bool(self.have[idx].all()):
            return self.store[idx.to(self.store.device)]
        out = compute().float()
        if self.store is None:
            self.store = torch.zeros(self.n, *out.shape[1:], device=out.device)
        self.store[idx.to(out.device)] = out
        self.have[idx] = True
        return out


class DiskCache:
    """Teacher outputs of a whole training set in numpy memmaps: ``logits.npy``, or with top-k
    ``values.npy`` + ``indices.npy`` + ``rest.npy`` (the mean of the logits left out)."""

    def __init__(self, folder: Path, device: torch.device):
        import numpy as np

        meta = json.loads((folder / "meta.json").read_text())
        self.folder, self.device, self.meta = folder, device, meta
        self.arrays = {name: np.load(folder / f"{name}.npy", mmap_mode="r") for name in meta["arrays"]}

    def get(self, idx: torch.Tensor, compute=None) -> torch.Tensor:
        import numpy as np
        import torch

        rows = idx.cpu().numpy()
        if "logits" in self.arrays:
            return torch.from_numpy(np.asarray(self.arrays["logits"][rows])).to(self.device)
        return expand_topk(torch.from_numpy(np.asarray(self.arrays["values"][rows])),
                           torch.from_numpy(np.asarray(self.arrays["indices"][rows])).long(),
                           torch.from_numpy(np.asarray(self.arrays["rest"][rows])),
                           self.meta["classes"]).to(self.device)


def expand_topk(values: torch.Tensor, indices: torch.Tensor, rest: torch.Tensor, classes: int) -> torch.Tensor:
    """Full logits from the k largest (``values`` at ``indices``), the others set to ``rest``."""
    out = rest[:, None].expand(len(values), classes).clone()
    return out.scatter_(1, indices, values)


def cache_key(task: Task, teacher_sha256: str, data_key: str, train: Dataset, topk: int | None,
              amp: str) -> str:
    """What the cached outputs depend on: the teacher, the data and its preprocessing, the samples
    actually trained on (size and a probe of three of them), top-k and the autocast precision."""
    import torch

    n = len(train)
    probe = [train[i][:2][0] for i in sorted({0, n // 2, n - 1})]
    h = [sha256_json({k: torch.as_tensor(v).float().flatten()[:4096].tolist() for k, v in x.items()})
         for x in probe]
    return sha256_json({"format": FORMAT, "teacher": teacher_sha256, "data": data_key, "task": task.name,
                        "n": n, "probe": h, "topk": topk, "amp": amp})


def build_disk_cache(root: Path, key: str, task: Task, teacher: nn.Module, train: Dataset,
                     device: torch.device, topk: int | None, autocast, batch_size: int = 256) -> DiskCache:
    """Open the cache under ``root/key``; rank 0 computes it first when it is not there."""
    folder = Path(root) / key
    if dist.world().main and not (folder / "meta.json").is_file():
        _compute(folder, task, teacher, train, device, topk, autocast, batch_size)
    dist.barrier()
    return DiskCache(folder, device)


def _compute(folder: Path, task: Task, teacher: nn.Module, train: Dataset, device: torch.device,
             topk: int | None, autocast, batch_size: int) -> None:
    import numpy as np
    import torch
    from torch.utils.data import Subset

    tmp = folder.with_name(f".{folder.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    arrays: dict[str, Any] = {}
    n = len(train)
    # variable-length inputs go longest first in batches of similar length (each batch pads to
    # its own longest item, not to the longest of a random draw); rows land at their own index
    lengths = task.lengths(train)
    order = list(range(n)) if lengths is None else sorted(range(n), key=lambda i: -lengths[i])
    start = 0
    with torch.inference_mode():
        for inputs, _ in task.loader(Subset(train, order), batch_size):
            with autocast():
                out = task.train_forward(teacher, {k: v.to(device) for k, v in inputs.items()})
            out = out.float().cpu()
            rows = _rows(out, topk)
            if not arrays:
                arrays = {name: np.lib.format.open_memmap(tmp / f"{name}.npy", mode="w+", dtype=a.dtype,
                                                          shape=(n, *a.shape[1:]))
                          for name, a in rows.items()}
            at = np.asarray(order[start:start + len(out)])
            for name, a in rows.items():
                arrays[name][at] = a
            start += len(out)
    for a in arrays.values():
        a.flush()
    meta = {"format": FORMAT, "n": n, "arrays": sorted(arrays), "topk": topk,
            "classes": int(out.shape[1]) if out.ndim == 2 else None}
    (tmp / "meta.json").write_text(json.dumps(meta))
    try:
        os.replace(tmp, folder)
    except OSError:  # another run finished the same cache first: same key, same content
        shutil.rmtree(tmp, ignore_errors=True)


def _rows(out: torch.Tensor, topk: int | None) -> dict[str, Any]:
    import numpy as np

    if topk is None or out.ndim != 2 or topk >= out.shape[1]:
        return {"logits": out.numpy().astype(np.float32)}
    values, indices = out.topk(topk, dim=1)
    rest = (out.sum(1) - values.sum(1)) / (out.shape[1] - topk)
    return {"values": values.numpy().astype(np.float32), "indices": indices.numpy().astype(np.int32),
            "rest": rest.numpy().astype(np.float32)}


@dataclass
class Teacher:
    """The frozen teacher: hint taps, reference outputs on val, and its outputs cached when they
    repeat (in memory, or on disk)."""

    module: nn.Module
    cache: MemoryCache | DiskCache | None
    taps: Taps | None
    val_out: torch.Tensor | None

    def outputs(self, task: Task, inputs: dict, idx: torch.Tensor | None) -> torch.Tensor:
        import torch

        with torch.no_grad():
            if self.cache is not None and idx is not None:
                return self.cache.get(idx, lambda: task.train_forward(self.module, inputs))
            return task.train_forward(self.module, inputs)
