"""Lightning data plumbing: an endless stream of batches that restarts where the checkpoint left off."""

from __future__ import annotations

from collections.abc import Iterator

import lightning as L
from torch.utils.data import DataLoader, IterableDataset

from workbench.data.bundle import Batch, DataBundle


class _Stream(IterableDataset):
    def __init__(self, bundle: DataBundle, start: int) -> None:
        self.bundle, self.start = bundle, start

    def __iter__(self) -> Iterator[Batch]:
        i = self.start
        while True:
            yield self.bundle.train(i)
            i += 1


class _Fixed(IterableDataset):
    def __init__(self, batches: list[Batch]) -> None:
        self.batches = batches

    def __iter__(self) -> Iterator[Batch]:
        return iter(self.batches)


class BundleDataModule(L.LightningDataModule):
    """Batch i is `bundle.train(i)`. Lightning builds the loader after restoring a checkpoint, so starting at
    global_step x accumulation replays exactly what an uninterrupted run would have seen next."""

    def __init__(self, bundle: DataBundle, accumulate: int) -> None:
        super().__init__()
        self.bundle, self.accumulate = bundle, accumulate

    def train_dataloader(self) -> DataLoader:
        start = self.trainer.global_step * self.accumulate if self.trainer is not None else 0
        return DataLoader(_Stream(self.bundle, start), batch_size=None)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(_Fixed(self.bundle.val), batch_size=None)
