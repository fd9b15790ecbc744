"""Training in several processes: torchrun's environment, the process group, and the few
collectives the trainer needs beside DistributedDataParallel's.

`torchrun --nproc-per-node N -m infnet train ...` (or `infnet train --nproc N`, which
launches it) starts N ranks. Every rank builds the same model from the same seed, wraps it
in DistributedDataParallel, which averages the gradients, and reads only its part of each
global batch of `train.batch_size` rows (loader.py, parts.py). The loss (losses.py) divides
each task's summed loss by the global batch's count of labels, so the averaged gradient is
the single-process gradient of the same global batch; evaluation is sharded by whole
batches and gathered, so every rank computes the single-process metrics and takes the same
early-stopping decision. Rank 0 alone writes the run directory; checkpoints hold the
unwrapped model, so they do not depend on the world size.

gloo runs on CPU, NCCL on CUDA (one device per local rank). Every collective has
`TIMEOUT_S`, so a rank that stops answering ends the job with an error, not a hang; torchrun
itself stops the others when one exits.
"""

from __future__ import annotations

import datetime
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from infnet.data.rows import Shard

# a collective (or the rendezvous) not met within this many seconds stops the job;
# INFNET_DIST_TIMEOUT_S overrides it
TIMEOUT_S = float(os.environ.get("INFNET_DIST_TIMEOUT_S", 300))


class DistributedError(RuntimeError):
    """The distributed environment or a peer rank failed."""


@dataclass(frozen=True)
class Group:
    rank: int
    world_size: int
    local_rank: int

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def shard(self) -> Shard:
        return Shard(self.rank, self.world_size)

    def device(self, device: torch.device) -> torch.device:
        """The rank's own CUDA device; CPU unchanged."""
        return torch.device("cuda", self.local_rank) if device.type == "cuda" else device

    def all_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """The sum over ranks (a new tensor; the argument is left alone)."""
        out = tensor.detach().clone()
        _collective("all_reduce", dist.all_reduce, out)
        return out

    def any(self, flag: bool) -> bool:
        return bool(self.all_sum(torch.tensor([float(flag)]))[0] > 0)

    def gather(self, value: Any) -> list[Any]:
        """Every rank's `value` (picklable), in rank order, on every rank."""
        out: list[Any] = [None] * self.world_size
        _collective("all_gather_object", dist.all_gather_object, out, value)
        return out

    def barrier(self) -> None:
        _collective("barrier", dist.barrier)


def _collective(name: str, fn, *args) -> None:
    try:
        fn(*args)
    except (RuntimeError, dist.DistBackendError) as err:
        raise DistributedError(
            f"rank {dist.get_rank()}: {name} with the other ranks failed (a rank died or "
            f"stopped answering for {TIMEOUT_S:.0f}s): {str(err).splitlines()[0][:300]}"
        ) from None


def from_environment(device: torch.device, timeout_s: float = TIMEOUT_S) -> Group | None:
    """The process group torchrun's variables describe, initialised; None outside torchrun
    (or with one process)."""
    world = os.environ.get("WORLD_SIZE")
    if world is None or int(world) == 1:
        return None
    missing = [
        v for v in ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT") if v not in os.environ
    ]
    if missing:
        raise DistributedError(
            f"WORLD_SIZE={world} but {', '.join(missing)} not set: start the ranks with "
            "`torchrun --nproc-per-node N -m infnet train ...` or `infnet train --nproc N`"
        )
    backend = "nccl" if device.type == "cuda" else "gloo"
    rank, local = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"])
    if device.type == "cuda":
        torch.cuda.set_device(local)
    address = f"{os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']}"
    try:
        dist.init_process_group(
            backend, timeout=datetime.timedelta(seconds=timeout_s), rank=rank, world_size=int(world)
        )
    except (RuntimeError, ValueError, dist.DistStoreError) as err:
        raise DistributedError(
            f"rank {rank}: cannot join the rendezvous at {address} ({backend}, "
            f"{world} processes): {str(err).splitlines()[0][:300]}"
        ) from None
    return Group(rank=rank, world_size=int(world), local_rank=local)


def spawn(fn: Callable[..., None], nprocs: int, *args: Any) -> None:
    """fn(*args) in `nprocs` new processes that form one group on this machine (torchrun's
    variables set in each, a free port on 127.0.0.1); an exception in any rank is raised
    here, naming the rank, after the others are stopped."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    torch.multiprocessing.start_processes(
        _rank_main, args=(fn, nprocs, port, args), nprocs=nprocs, start_method="spawn"
    )


def _rank_main(rank: int, fn: Callable[..., None], nprocs: int, port: int, args: tuple) -> None:
    os.environ.update(
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(nprocs),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    fn(*args)


def shut_down() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def check_batch(batch_size: int, group: Group | None) -> None:
    if group is not None and batch_size % group.world_size:
        raise ValueError(
            f"train.batch_size={batch_size} is not divisible by the {group.world_size} "
            "processes; the global batch is split evenly across them"
        )
