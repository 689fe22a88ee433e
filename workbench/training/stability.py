"""Stability monitors for the soft-cap vs QK-norm question, logged every `trainer.monitor_every` steps;
docs/config.md, "Stability monitors", tables the metrics (max logit and saturation per layer, output-logit RMS,
loss spike).
The probes that score a monitored step are the library's (`workbench.probes`); this callback attaches them.
"""

from __future__ import annotations

import math
import statistics
from collections import deque
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from workbench.probes import Probes, attach_probes, detach_probes, probe_metrics

SPIKE_WINDOW = 50


class LossSpike:
    """Each loss over the median of the `window` losses before it; `pop_max` returns the largest since last asked."""

    def __init__(self, window: int = SPIKE_WINDOW) -> None:
        self.history: deque[float] = deque(maxlen=window)
        self.peak = math.nan

    def update(self, loss: float) -> None:
        if self.history and math.isfinite(loss):
            score = loss / statistics.median(self.history)
            self.peak = score if math.isnan(self.peak) else max(self.peak, score)
        self.history.append(loss)

    def pop_max(self) -> float:
        peak, self.peak = self.peak, math.nan
        return peak


class StabilityMonitor(Callback):
    """Probes the first micro-batch of every `every`-th optimiser step and logs to every logger of the trainer.

    Metrics go to the loggers directly at the step Lightning logs that batch's train/loss with, so they are not
    thinned out by `log_every_n_steps`.
    """

    def __init__(self, every: int) -> None:
        if every < 0:
            raise ValueError(f"trainer.monitor_every: got {every}; allowed: 0 (off) or a positive number of steps")
        self.every = every
        self.spike = LossSpike()
        self._losses: list[torch.Tensor] = []  # the steps' losses since the last monitored step, on the device
        self._probes: Probes | None = None
        self._step: int | None = None  # the step being probed

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, idx: int) -> None:
        first_micro_batch = idx % trainer.accumulate_grad_batches == 0
        if self.every and first_micro_batch and trainer.global_step % self.every == 0:
            self._probes, self._step = attach_probes(pl_module, self._probes), trainer.global_step

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, idx: int
    ) -> None:
        if not self.every:
            return
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        self._losses.append(loss.detach())
        if self._step is None:
            return
        for value in torch.stack(self._losses).tolist():  # one host sync per monitored step, not one per step
            self.spike.update(value)
        self._losses.clear()
        detach_probes(pl_module)
        metrics = probe_metrics(*self._probes)
        if not math.isnan(spike := self.spike.pop_max()):
            metrics["stability/loss_spike"] = spike
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=self._step)
        self._step = None

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        detach_probes(pl_module)
        self._step = None
        self._losses.clear()
