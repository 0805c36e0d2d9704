"""torch.distributed for the training loops: process-group setup from torchrun's environment, the
launcher behind ``compress pipeline --nproc N``, and the few collectives the engine and ``fit_`` use.

One process (no ``WORLD_SIZE`` in the environment) never touches torch.distributed: every helper
here then answers as rank 0 of 1 and the collectives do nothing.
"""

from __future__ import annotations

import datetime
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

# Non-training stages (export, benchmark) run on rank 0 while the others wait at a barrier.
_TIMEOUT = datetime.timedelta(hours=6)


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def _dist():
    import torch.distributed as dist

    return dist if dist.is_available() and dist.is_initialized() else None


def world() -> World:
    """This process's place: rank, world size and local rank (rank 0 of 1 without a group)."""
    d = _dist()
    if d is None:
        return World()
    return World(d.get_rank(), d.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))


def env_world_size() -> int:
    """WORLD_SIZE as torchrun set it (1 when not launched by torchrun)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 1


def init_from_env(device: torch.device) -> torch.device:
    """Join the process group torchrun described (gloo on CPU, nccl on CUDA) and return this rank's
    device: ``cuda:LOCAL_RANK`` on CUDA. Without torchrun's environment, returns ``device``."""
    import torch
    import torch.distributed as dist

    if env_world_size() <= 1:
        return device
    local = int(os.environ.get("LOCAL_RANK", 0))
    if device.type == "cuda":
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, timeout=_TIMEOUT)
    return device


def shutdown() -> None:
    """Leave the process group (when one was joined)."""
    d = _dist()
    if d is not None:
        d.destroy_process_group()


def barrier() -> None:
    d = _dist()
    if d is not None:
        d.barrier()


def broadcast(obj: Any, src: int = 0) -> Any:
    """``obj`` of rank ``src`` on every rank (picklable objects)."""
    d = _dist()
    if d is None:
        return obj
    box = [obj]
    d.broadcast_object_list(box, src=src)
    return box[0]


def gather(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order, on every rank."""
    d = _dist()
    if d is None:
        return [obj]
    out: list[Any] = [None] * d.get_world_size()
    d.all_gather_object(out, obj)
    return out


def mean(values: list[float], device: torch.device) -> list[float]:
    """The element-wise mean of ``values`` over ranks."""
    import torch

    d = _dist()
    if d is None:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=device)
    d.all_reduce(t)
    return (t / d.get_world_size()).tolist()


def average_grads_(params: list) -> None:
    """Average the gradients of ``params`` over ranks (parameters outside the DDP-wrapped model)."""
    d = _dist()
    if d is None:
        return
    for p in params:
        if p.grad is not None:
            d.all_reduce(p.grad)
            p.grad /= d.get_world_size()


def broadcast_buffers_(model: torch.nn.Module) -> None:
    """Give every rank rank 0's buffers (BatchNorm statistics drift apart per rank in training)."""
    d = _dist()
    if d is None:
        return
    for b in model.buffers():
        d.broadcast(b, src=0)


def wrap_ddp(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """``model`` in DistributedDataParallel when a group exists, else ``model`` itself."""
    if _dist() is None:
        return model
    from torch.nn.parallel import DistributedDataParallel as DDP

    ids = [device.index] if device.type == "cuda" else None
    return DDP(model, device_ids=ids)


def launch(nproc: int, argv: list[str]) -> int:
    """Run ``python -m compress.cli <argv>`` in ``nproc`` workers through torch's elastic launcher
    (torchrun, standalone rendezvous on this machine). Returns rank 0's exit code."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    args = get_args_parser().parse_args(
        ["--standalone", f"--nproc-per-node={nproc}", "--max-restarts=0", "-m", "compress.cli", *argv]
    )
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    try:
        run(args)
    except ChildFailedError as e:
        codes = {f.local_rank: f.exitcode for f in e.failures.values()}
        code = codes.get(0, next(iter(codes.values()), 1))
        return code if code and code > 0 else 1
    return 0


def python_argv() -> list[str]:
    """The CLI arguments of this process, for re-running them in workers."""
    return list(sys.argv[1:])


# group_by_length sorts runs of this many batches of the shuffled order by length
LENGTH_GROUP_BATCHES = 50


def batch_sampler(n: int, global_batch: int, shuffle: bool, seed: int,
                  lengths: Sequence[int] | None = None):
    """A ``ShardedBatchSampler`` over ``n`` samples for this process; with ``lengths`` (one per
    sample) each epoch's batches hold samples of similar length."""
    w = world()
    return _sampler_class()(n, global_batch, w.size, w.rank, shuffle, seed, lengths)


def _sampler_class():
    from torch.utils.data.distributed import DistributedSampler

    class ShardedBatchSampler(DistributedSampler):
        """DistributedSampler at the level of the global batch: each step takes the next
        ``global_batch`` samples of the epoch's permutation (seeded by seed + epoch) and this rank
        takes its slice of them, so N processes see exactly the batches one process would. It
        starts ``start_step`` steps into the epoch (resuming from a mid-epoch checkpoint). With
        ``lengths`` the permutation is regrouped by length (``by_length``)."""

        def __init__(self, n, global_batch, num_replicas, rank, shuffle, seed, lengths=None):
            super().__init__(range(n), num_replicas=num_replicas, rank=rank, shuffle=shuffle,
                             seed=seed, drop_last=False)
            import torch

            self.n, self.global_batch, self.start_step = n, global_batch, 0
            self.lengths = None if lengths is None else torch.as_tensor(lengths)
            if self.lengths is not None and len(self.lengths) != n:
                raise ValueError(f"{len(self.lengths)} lengths for {n} samples")
            # a last batch smaller than the world would leave a rank without samples: drop it
            self.steps = -(-n // global_batch) - (1 if 0 < n % global_batch < num_replicas else 0)

        def __len__(self) -> int:
            return self.steps

        def global_size(self, step: int) -> int:
            return min(self.global_batch, self.n - step * self.global_batch)

        def __iter__(self):
            import torch

            if self.shuffle:
                g = torch.Generator().manual_seed(self.seed + self.epoch)
                order = torch.randperm(self.n, generator=g)
            else:
                order = torch.arange(self.n)
                g = None
            if self.lengths is not None:
                order = by_length(order, self.lengths, self.global_batch, g)
            for step in range(self.start_step, self.steps):
                chunk = order[step * self.global_batch:(step + 1) * self.global_batch]
                yield chunk.tensor_split(self.num_replicas)[self.rank].tolist()

    return ShardedBatchSampler


def by_length(order, lengths: torch.Tensor | Sequence[int], batch: int, g=None):
    """``order`` regrouped so that each batch holds samples of similar length: every run of
    ``LENGTH_GROUP_BATCHES`` batches is sorted by length (longest first) and cut into batches,
    then the full batches trade places at random with ``g`` (none: they stay in order). A short
    last batch stays last, so the step count and which step is short do not change."""
    import torch

    lens = torch.as_tensor(lengths)[order]
    span = batch * LENGTH_GROUP_BATCHES
    parts = []
    for start in range(0, len(order), span):
        run = order[start:start + span]
        parts.append(run[torch.sort(lens[start:start + span], descending=True, stable=True).indices])
    grouped = torch.cat(parts) if parts else order
    full = len(grouped) // batch
    if g is None or full < 2:
        return grouped
    blocks = grouped[:full * batch].view(full, batch)[torch.randperm(full, generator=g)]
    return torch.cat([blocks.reshape(-1), grouped[full * batch:]])
