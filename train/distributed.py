"""Training across processes and machines with PyTorch's DistributedDataParallel, as `torchrun` starts it.

`torchrun --standalone --nproc-per-node 2 -m train ...` on one machine, or `torchrun --nnodes 2 --node-rank R
--master-addr HOST --master-port 29500 --nproc-per-node G -m train ...` on each of several: torchrun sets RANK,
LOCAL_RANK, WORLD_SIZE and the rendezvous variables, and this module reads them (no home-made cluster code). gloo on
a CPU, nccl on CUDA. Each rank trains on its own shard of every epoch (DistributedSampler, reshuffled per epoch from
the run's seed); DDP averages the gradients, so the ranks hold the same weights after every step. Validation is
sharded too and its outputs gathered, so every rank computes the same metrics and takes the same early-stopping
decision; rank 0 alone writes checkpoints, TensorBoard and the registry row.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Ranks:
    """Where this process stands in the run; a single-process run is Ranks(0, 0, 1)."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched_ranks() -> Ranks:
    """The ranks torchrun gave this process (RANK, LOCAL_RANK, WORLD_SIZE), or a single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Ranks()
    return Ranks(int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", os.environ["RANK"])), world)


def start(ranks: Ranks, device: torch.device) -> torch.device:
    """Join the process group (nccl on CUDA, gloo on a CPU); returns this rank's device (its own GPU)."""
    if not ranks.distributed:
        return device
    if device.type == "cuda":
        device = torch.device("cuda", ranks.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device


def finish(ranks: Ranks) -> None:
    """Leave the process group. The barrier first: without it a rank that finished early destroys the group while
    another still talks to it, which aborted two single-process "nodes" on one machine at shutdown."""
    if ranks.distributed and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def wrapped(model: torch.nn.Module, ranks: Ranks, device: torch.device) -> torch.nn.Module:
    """The model as DDP trains it (gradients averaged over the ranks), or the model itself in one process."""
    if not ranks.distributed:
        return model
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def unwrapped(model: torch.nn.Module) -> torch.nn.Module:
    return getattr(model, "module", model)


def shard(count: int, ranks: Ranks) -> np.ndarray:
    """The indices of `count` items this rank evaluates: every world_size-th, so the shards cover all once."""
    return np.arange(ranks.rank, count, ranks.world_size)


def gathered(arrays: Sequence[np.ndarray | None], ranks: Ranks, count: int) -> list[np.ndarray | None]:
    """Each rank's outputs on its `shard`, put back in the original order of the `count` items, on every rank."""
    if not ranks.distributed:
        return list(arrays)
    parts: list[list[np.ndarray | None]] = [None] * ranks.world_size  # type: ignore[list-item]
    dist.all_gather_object(parts, list(arrays))
    whole: list[np.ndarray | None] = []
    for k in range(len(arrays)):
        if parts[0][k] is None:
            whole.append(None)
            continue
        first = parts[0][k]
        merged = np.empty((count, *first.shape[1:]), dtype=first.dtype)
        for r in range(ranks.world_size):
            merged[shard(count, Ranks(r, r, ranks.world_size))] = parts[r][k]
        whole.append(merged)
    return whole


def mean_over_ranks(value: float, ranks: Ranks) -> float:
    """A number's mean over the ranks (each rank's training loss, say)."""
    if not ranks.distributed:
        return value
    tensor = torch.tensor([value], dtype=torch.float64)
    dist.all_reduce(tensor)
    return float(tensor.item()) / ranks.world_size


def weight_spread(model: torch.nn.Module, ranks: Ranks) -> float:
    """The largest difference between the ranks of any parameter's checksum: 0.0 when DDP kept the replicas
    identical, as it must (the run records it every epoch, so a divergence shows in history.json)."""
    if not ranks.distributed:
        return 0.0
    sums = torch.stack([p.detach().double().sum() for p in unwrapped(model).parameters()]).cpu()
    parts = [torch.zeros_like(sums) for _ in range(ranks.world_size)]
    dist.all_gather(parts, sums)
    stacked = torch.stack(parts)
    return float((stacked.max(0).values - stacked.min(0).values).abs().max())


def sync_buffers(model: torch.nn.Module, ranks: Ranks) -> None:
    """Rank 0's buffers (batch-norm running statistics) on every rank. DDP broadcasts them at the start of each
    forward, so after the last training step each rank holds statistics of its own last batch; evaluation on the
    ranks' shards must use one model, rank 0's, which is the one saved."""
    if not ranks.distributed:
        return
    for buffer in unwrapped(model).buffers():
        dist.broadcast(buffer.data, src=0)
