"""A deterministic, resumable, shardable sampler.

Epoch e uses the permutation of ``torch.Generator().manual_seed(seed + e)``; process r of W takes every W-th index
(padded by wrapping so all processes see the same number of batches, as ``DistributedSampler`` does); ``start``
skips the samples already consumed, so a run resumed mid-epoch sees exactly the batches it had left.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from torch.utils.data import Sampler

__all__ = ["ResumableSampler"]


class ResumableSampler(Sampler[int]):
    """Args:
    n: dataset size.
    seed: base seed.
    shuffle: permute each epoch.
    rank: this process's rank.
    world_size: number of processes.
    """

    def __init__(self, n: int, seed: int = 0, shuffle: bool = True, rank: int = 0, world_size: int = 1) -> None:
        if n <= 0:
            raise ValueError("cannot sample from an empty dataset")
        self.n, self.seed, self.shuffle, self.rank, self.world_size = n, seed, shuffle, rank, world_size
        self.epoch = 0
        self.start = 0
        self.per_rank = math.ceil(n / world_size)

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Select the epoch's permutation and skip its first ``start`` samples (of this process)."""
        self.epoch, self.start = epoch, start

    def indices(self) -> list[int]:
        """This process's full index list for the current epoch."""
        if self.shuffle:
            order = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed + self.epoch)).tolist()
        else:
            order = list(range(self.n))
        total = self.per_rank * self.world_size
        order = (order * math.ceil(total / self.n))[:total]
        return order[self.rank :: self.world_size]

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices()[self.start :])

    def __len__(self) -> int:
        return self.per_rank - self.start
