"""Tokens/s and MFU through Lightning's `ThroughputMonitor`, with a peak-FLOPs figure for CPUs Lightning lacks."""

from __future__ import annotations

import time

import lightning as L
import torch
from lightning.pytorch.callbacks import ThroughputMonitor
from lightning.pytorch.trainer.states import RunningStage

from workbench.data.bundle import Batch


def measured_matmul_flops(dtype: torch.dtype, size: int = 1024, seconds: float = 0.5) -> float:
    """Dense matmul FLOP/s achieved on this CPU: the denominator of MFU where no datasheet peak is known."""
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    a @ b  # warm up
    n, t0 = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - t0) < seconds:
        a @ b
        n += 1
    return 2 * size**3 * n / elapsed


class TokenThroughput(ThroughputMonitor):
    """Logs train/device/items_per_sec (tokens/s) and train/device/mfu.

    `peak_flops` None: Lightning's datasheet table, and where it has none (CPUs), a measured matmul rate.
    """

    def __init__(self, window_size: int, peak_flops: float | None = None) -> None:
        super().__init__(batch_size_fn=_batch_size, length_fn=_tokens, window_size=window_size)
        self.peak_flops = peak_flops

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        self._module = pl_module
        if self.available_flops is None:
            dtype = torch.bfloat16 if "bf16" in str(trainer.precision) else torch.float32
            self.available_flops = self.peak_flops or measured_matmul_flops(dtype)
            for throughput in self._throughputs.values():
                throughput.available_flops = self.available_flops

    def latest(self) -> dict[str, float]:
        """Cumulative training time, batches and tokens since (re)start, and the last window's rates and MFU."""
        throughput = self._throughputs.get(RunningStage.TRAINING)
        # no step since (re)start: a run resumed from its final checkpoint has nothing to measure
        out = {} if throughput is None or not throughput._time else throughput.compute()
        if "mfu" not in out and out.get("time") and self.available_flops:  # window not yet full: whole-run average
            flops = getattr(self._module, "flops_per_batch", None)
            out["mfu"] = flops * out["batches"] / out["time"] / self.available_flops if flops else None
        return out


def _batch_size(batch: Batch) -> int:
    return batch[0].shape[0]


def _tokens(batch: Batch) -> int:
    return batch[0].numel()
