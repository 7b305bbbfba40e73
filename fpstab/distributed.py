"""Data parallel training over processes started by torchrun.

    torchrun --nproc_per_node N -m fpstab.cli train ...

Each process (rank) holds the whole model and trains on its equal share of
every batch. The loss's forward runs through torch's DistributedDataParallel,
which averages the gradients over the ranks during backward, so every rank
takes the same optimizer step as one process would on the whole batch. The
progressive loss's (n, k) comes from the seeded sampler every rank holds, so
all ranks draw the same depths. Rank 0 alone validates and writes records and
checkpoints.

torchrun sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT;
`ranks_from_env` reads them without importing torch. Backends: nccl on cuda,
gloo on cpu.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from fpstab.config import TrainConfig
    from fpstab.protocol import DataParallel, StepFn

ENV_KEYS = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


@dataclass(frozen=True)
class Ranks:
    """This process's place among the data-parallel processes (world 1: not distributed)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0 writes the run's records and checkpoints."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1

    def check_batch(self, batch_size: int) -> None:
        """The batch must split into equal shares (so the mean of their losses is the batch's)."""
        if batch_size % self.world:
            raise ValueError(f"batch_size={batch_size} does not split evenly over {self.world} processes; "
                             f"use a multiple of {self.world}")

    def shard(self, batch: Any) -> Any:
        """This rank's contiguous share of a batch (first dimension): (B, ...) -> (B / world, ...)."""
        size = batch.shape[0] // self.world
        return batch[self.rank * size:(self.rank + 1) * size]

    def device(self, name: str) -> str:
        """'cuda' means this rank's GPU (cuda:LOCAL_RANK) when distributed; other names pass through,
        but one GPU (cuda:N) cannot hold every rank."""
        if not self.distributed or not name.startswith("cuda"):
            return name
        if name != "cuda":
            raise ValueError(f"--device {name} with {self.world} processes: give --device cuda "
                             "(each process takes the GPU of its LOCAL_RANK)")
        return f"cuda:{self.local_rank}"

    def mean(self, tensor: Any) -> Any:
        """The mean of `tensor` over the ranks (every rank passes one of the same shape)."""
        if not self.distributed:
            return tensor
        import torch.distributed as dist

        tensor = tensor.clone()
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor / self.world

    def any(self, flag: bool, device: Any = "cpu") -> bool:
        """True when `flag` is set on any rank (so all ranks stop at the same step)."""
        if not self.distributed:
            return flag
        import torch
        import torch.distributed as dist

        t = torch.tensor([1.0 if flag else 0.0], device=device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item() > 0)


SINGLE = Ranks()


def ranks_from_env(env: Mapping[str, str] | None = None) -> Ranks:
    """The ranks torchrun describes in the environment; Ranks() when it is not set.

    ValueError for values that are not consistent ints.
    """
    env = os.environ if env is None else env
    if "WORLD_SIZE" not in env:
        return SINGLE
    try:
        rank, world = int(env.get("RANK", "0")), int(env["WORLD_SIZE"])
        local_rank = int(env.get("LOCAL_RANK", str(rank)))
    except ValueError:
        raise ValueError(f"torchrun environment {[f'{k}={env.get(k)!r}' for k in ENV_KEYS]} is not ints") from None
    if world < 1 or not 0 <= rank < world or local_rank < 0:
        raise ValueError(f"torchrun environment has RANK={rank}, WORLD_SIZE={world}, LOCAL_RANK={local_rank}; "
                         "need 0 <= RANK < WORLD_SIZE")
    return Ranks(rank, world, local_rank)


DRAIN_S = 0.2  # seconds the workers get to finish before the group is torn down


@contextlib.contextmanager
def process_group(ranks: Ranks, device_type: str, timeout_s: float = 600.0) -> Iterator[None]:
    """The default process group for `ranks` while the block runs (nothing when not distributed).

    timeout_s bounds how long a rank waits for the others in a collective call,
    so a rank that died does not leave the rest waiting forever.
    """
    if not ranks.distributed:
        yield
        return
    import torch
    import torch.distributed as dist

    backend = "nccl" if device_type == "cuda" else "gloo"
    if device_type == "cuda":
        torch.cuda.set_device(ranks.local_rank)
    dist.init_process_group(backend, rank=ranks.rank, world_size=ranks.world,
                            timeout=datetime.timedelta(seconds=timeout_s))
    try:
        yield
    finally:
        # A gloo worker thread frees a finished collective's tensors a moment after the caller's wait()
        # returned, and freeing a tensor Python let go of takes the GIL. The group's destructor joins
        # those workers while holding the GIL. It runs here, or later when the DDP module that holds the
        # group is freed. If it starts inside that moment, the join and the worker wait on each other
        # forever. Seen with torch 2.13 on CPU when a 2-rank run stopped right after a collective
        # (--stop-after-steps): about 1 hang in 4 tries, and gdb showed exactly that wait. Sleeping lets
        # the workers take the GIL and finish first. No collective follows, so none can start again.
        time.sleep(DRAIN_S)
        dist.destroy_process_group()


def data_parallel(core: torch.nn.Module, step_fn: StepFn, task: Any, cfg: TrainConfig, ranks: Ranks,
                  device: torch.device) -> DataParallel:
    """The DistributedDataParallel loss of `core` for `train_step` (the process group initialized).

    When the step ignores the input (no_recall, fixed_depth), the encoder can
    miss the loss (the progressive loss's n > 0 detaches the state, h0 may not
    be the embedding): such parameters are looked for on every step, and their
    gradients stay None, as in one process.
    """
    from torch.nn.parallel import DistributedDataParallel

    from fpstab.protocol import DataParallel, LossModule

    # broadcast_buffers off: training changes no buffer of a core (it has none that it updates).
    loss = DistributedDataParallel(LossModule(core, step_fn, task, cfg),
                                   find_unused_parameters=not getattr(core, "has_input_injection", False),
                                   device_ids=[device.index] if device.type == "cuda" else None,
                                   broadcast_buffers=False)
    return DataParallel(loss, ranks.mean)
