"""Lightning data plumbing: an endless stream of batches that restarts where the checkpoint left off."""

from __future__ import annotations

from collections.abc import Iterator

import lightning as L
from torch.utils.data import DataLoader, IterableDataset

from workbench.data.bundle import Batch, DataBundle


class _Stream(IterableDataset):
    """Batches start, start + 1, ...; rank r of a world of n keeps rows [r * B/n, (r + 1) * B/n) of each."""

    def __init__(self, bundle: DataBundle, start: int, rank: int = 0, world: int = 1) -> None:
        self.bundle, self.start, self.rank, self.world = bundle, start, rank, world

    def __iter__(self) -> Iterator[Batch]:
        i = self.start
        while True:
            yield shard(self.bundle.train(i), self.rank, self.world)
            i += 1


def shard(batch: Batch, rank: int, world: int) -> Batch:
    """This rank's contiguous slice of a global batch: the ranks' slices, in rank order, are the whole batch."""
    x, y = batch
    size = x.shape[0] // world  # run.py checks that the world size divides the batch
    return x[rank * size : (rank + 1) * size], y[rank * size : (rank + 1) * size]


class _Fixed(IterableDataset):
    def __init__(self, batches: list[Batch]) -> None:
        self.batches = batches

    def __iter__(self) -> Iterator[Batch]:
        return iter(self.batches)


class BundleDataModule(L.LightningDataModule):
    """Batch i is `bundle.train(i)`. Lightning builds the loader after restoring a checkpoint, so starting at
    global_step x accumulation replays exactly what an uninterrupted run would have seen next.

    Under DDP/FSDP each data-parallel rank streams its own slice of every global batch (`shard`); every rank
    scores the whole fixed validation set, so the validation metrics need no reduction.
    """

    def __init__(self, bundle: DataBundle, accumulate: int) -> None:
        super().__init__()
        self.bundle, self.accumulate = bundle, accumulate

    def train_dataloader(self) -> DataLoader:
        start, rank, world = 0, 0, 1
        if self.trainer is not None:
            start = self.trainer.global_step * self.accumulate
            # ParallelStrategy subclasses (DDP, ModelParallel, DeepSpeed) say which data-parallel rank this is
            sampler = getattr(self.trainer.strategy, "distributed_sampler_kwargs", None) or {}
            rank, world = sampler.get("rank", 0), sampler.get("num_replicas", 1)
        return DataLoader(_Stream(self.bundle, start, rank, world), batch_size=None)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(_Fixed(self.bundle.val), batch_size=None)
