"""Stability monitors for the soft-cap vs QK-norm question, logged every `trainer.monitor_every` steps; README,
"Stability monitors", tables the metrics (max logit and saturation per layer, output-logit RMS, loss spike).

Fused attention never materialises its logits, so on a monitored step only, each attention module gets an
`AttentionProbe` (its `probe` attribute; None otherwise, which costs one attribute check per forward) that scores
the step's queries against its keys again, in float32 and in query chunks, over every visible pair (causal and
window masks, all heads, the whole batch).
"""

from __future__ import annotations

import math
import statistics
from collections import deque
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from workbench.blocks.attention import visible

REFERENCE_CAP = 50.0  # Gemma 2's attention soft-cap
SATURATION = 0.9  # saturated: the capped logit is within 10% of its bound
SPIKE_WINDOW = 50
CHUNK_ELEMENTS = 1 << 18  # scores a probe materialises at once on CPU (1 MiB of float32: stays in cache)
CHUNK_ELEMENTS_ACCELERATOR = 1 << 24  # on GPUs (64 MiB): fewer, larger kernels


def saturation_threshold(cap: float | None) -> float:
    """|logit| from which the tanh cap `cap` (None: `REFERENCE_CAP`) is saturated."""
    return (cap or REFERENCE_CAP) * math.atanh(SATURATION)


class AttentionProbe:
    """Max |logit| and the count of saturated logits over the visible pairs one attention layer scored."""

    def __init__(self, cap: float | None) -> None:
        self.threshold = saturation_threshold(cap)
        self.reset()

    def reset(self) -> None:
        self.max_logit: torch.Tensor | None = None
        self.saturated: torch.Tensor | None = None
        self.pairs = 0

    @torch.compiler.disable  # a compiled model runs it eagerly, outside its graph
    @torch.no_grad()
    def __call__(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        q_pos: torch.Tensor,
        k_pos: torch.Tensor,
        window: int | None,
        scale: float,
    ) -> None:
        """q (B, H, Tq, D), k (B, Hk, Tk, D) with H a multiple of Hk (query head h reads key head h // (H / Hk))."""
        B, H, Tq, D = q.shape
        Hk, Tk = k.shape[1], k.shape[2]
        with torch.autocast(q.device.type, enabled=False):
            qg = (q.float() * scale).reshape(B, Hk, H // Hk, Tq, D)
            kt = k.float().transpose(-2, -1)[:, :, None]  # (B, Hk, 1, D, Tk)
            mask = visible(q_pos, k_pos, window)
            budget = CHUNK_ELEMENTS if q.device.type == "cpu" else CHUNK_ELEMENTS_ACCELERATOR
            chunk = max(1, budget // (B * H * Tk))
            peak, saturated = q.new_zeros((), dtype=torch.float32), q.new_zeros((), dtype=torch.long)
            for s in range(0, Tq, chunk):
                m = mask[s : s + chunk]
                logits = (qg[:, :, :, s : s + chunk] @ kt).abs_().masked_fill_(~m, 0.0)
                peak = torch.maximum(peak, logits.amax())
                saturated += torch.count_nonzero(logits >= self.threshold)  # masked pairs are 0, below any threshold
        self.max_logit = peak if self.max_logit is None else torch.maximum(self.max_logit, peak)
        self.saturated = saturated if self.saturated is None else self.saturated + saturated
        self.pairs += int(mask.sum()) * B * H


class LogitProbe:
    """Running sum of squares of the output logits (before the final soft-cap)."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.sum_squares: torch.Tensor | None = None
        self.count = 0

    @torch.compiler.disable
    @torch.no_grad()
    def __call__(self, logits: torch.Tensor) -> None:
        s = torch.linalg.vector_norm(logits, dtype=torch.float32).square()
        self.sum_squares = s if self.sum_squares is None else self.sum_squares + s
        self.count += logits.numel()


Probes = tuple[list[AttentionProbe], list[LogitProbe]]


def attach_probes(module: torch.nn.Module, probes: Probes | None = None) -> Probes:
    """Set a probe on every attention module (in layer order; its soft-cap sets the saturation range) and a logit
    probe on the model. `probes` from an earlier call on the same module are reset and reused, so a compiled model
    meets the same objects on every monitored step (no recompilation)."""
    attention = [m for m in module.modules() if hasattr(m, "probe")]
    models = [m for m in module.modules() if hasattr(m, "logit_probe")]
    probes = probes or ([AttentionProbe(m.softcap) for m in attention], [LogitProbe() for _ in models])
    for m, p in zip(attention, probes[0], strict=True):
        p.reset()
        m.probe = p
    for m, p in zip(models, probes[1], strict=True):
        p.reset()
        m.logit_probe = p
    return probes


def detach_probes(module: torch.nn.Module) -> None:
    for m in module.modules():
        if hasattr(m, "probe"):
            m.probe = None
        if hasattr(m, "logit_probe"):
            m.logit_probe = None


def probe_metrics(attention: list[AttentionProbe], logits: list[LogitProbe]) -> dict[str, float]:
    out = {}
    for i, p in enumerate(attention):
        if p.pairs:
            out[f"stability/max_logit/layer{i}"] = float(p.max_logit)
            out[f"stability/saturation/layer{i}"] = float(p.saturated) / p.pairs
    if count := sum(p.count for p in logits):
        out["stability/output_logit_rms"] = math.sqrt(sum(float(p.sum_squares) for p in logits if p.count) / count)
    return out


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
