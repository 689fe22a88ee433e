"""The LightningModule: next-token loss on a `Transformer`, with the metrics every ablation arm reports."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F

from workbench.accounting import training_flops
from workbench.config import ModelConfig
from workbench.data.bundle import IGNORE, Batch
from workbench.model import build_model
from workbench.training.checkpoints import MODEL_CONFIG_KEY
from workbench.training.optim import build_optimizer
from workbench.training.strategy import fully_shard_model, total_grad_norm

if TYPE_CHECKING:
    from workbench.training.distillation import Distiller


class NonFiniteLossError(FloatingPointError):
    """A NaN or inf training loss; `step` is the optimiser step it appeared at (results.json's `failed_step`)."""

    def __init__(self, loss: float, step: int) -> None:
        super().__init__(f"train loss is {loss} at step {step}")
        self.step = step


class LMModule(L.LightningModule):
    def __init__(
        self,
        model_cfg: ModelConfig,
        optim_cfg: Mapping[str, Any],
        token_bytes: np.ndarray | None = None,
        compile: bool = False,
        distiller: Distiller | None = None,
    ) -> None:
        super().__init__()
        self.model_cfg, self.optim_cfg, self.compile = model_cfg, dict(optim_cfg), compile
        self.distiller = distiller  # a plain object: its teacher is neither saved, counted nor optimised
        self.model = build_model(model_cfg)
        self.register_buffer(
            "token_bytes", None if token_bytes is None else torch.as_tensor(token_bytes), persistent=False
        )
        self.flops_per_batch: int | None = None  # read by ThroughputMonitor for MFU
        self.last_train_loss = math.nan
        self._val_sums: dict[str, float] = {}

    def configure_model(self) -> None:
        if self._device_mesh is not None:  # set by ModelParallelStrategy: trainer.strategy=fsdp2
            fully_shard_model(self.model, self._device_mesh["data_parallel"])
        if self.compile:
            self.model = torch.compile(self.model)

    def set_flops_per_batch(self, batch_size: int, seq_len: int) -> None:
        """Forward + backward FLOPs of one batch for MFU, in the project's one convention (`workbench.accounting`).

        Attention counts the pairs attended, window-aware, so MFU compares across local:global arms.
        """
        self.flops_per_batch = batch_size * training_flops(self.model_cfg, seq_len)

    def _losses(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = batch
        logits = self.model(x).float()
        return F.cross_entropy(logits.flatten(0, 1), y.flatten(), ignore_index=IGNORE, reduction="none"), logits

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        losses, logits = self._losses(batch)
        loss = losses.sum() / (batch[1] != IGNORE).sum().clamp(min=1)
        if self.distiller is not None:
            kd = self.distiller.kd_loss(logits, *batch)
            self.log_dict({"train/kd_loss": kd, "train/next_token_loss": loss})
            loss = self.distiller.mix(kd, loss)
        self.last_train_loss = loss.item()
        if not math.isfinite(self.last_train_loss):  # fail the run now: an ablation grid records it and goes on
            raise NonFiniteLossError(self.last_train_loss, self.global_step)
        self.log("train/loss", loss, prog_bar=True, sync_dist=True)  # the global batch's mean under DDP/FSDP
        self.log("train/lr", self.optimizers().param_groups[0]["lr"])
        return loss

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        # the accumulated gradient, before clipping
        self.log("train/grad_norm", total_grad_norm(self.model))

    def on_fit_start(self) -> None:
        if self.distiller is not None:
            self.distiller.to(self.device)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[MODEL_CONFIG_KEY] = self.model_cfg.to_dict()  # a checkpoint rebuilds its model on its own

    def on_validation_epoch_start(self) -> None:
        self._val_sums = {"nats": 0.0, "targets": 0.0, "correct": 0.0, "bytes": 0.0, "kd_nats": 0.0}
        if self.distiller is not None:
            self.distiller.to(self.device)  # also for trainer.validate outside fit

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        losses, logits = self._losses(batch)
        y = batch[1].flatten()
        mask = y != IGNORE
        s = self._val_sums
        s["nats"] += losses[mask].sum().item()
        s["targets"] += mask.sum().item()
        s["correct"] += (logits.flatten(0, 1).argmax(-1)[mask] == y[mask]).sum().item()
        if self.token_bytes is not None:
            s["bytes"] += self.token_bytes[y[mask]].sum().item()
        if self.distiller is not None:  # the full cross-entropy to the teacher: the same for every k
            s["kd_nats"] += self.distiller.full_kd_sum(logits, *batch).item()

    def on_validation_epoch_end(self) -> None:
        """Sums over the whole fixed validation budget, so every arm is scored on the same tokens."""
        s = self._val_sums
        self.log("val/loss", s["nats"] / max(1, s["targets"]), prog_bar=True)
        self.log("val/accuracy", s["correct"] / max(1, s["targets"]))
        if s["bytes"]:
            self.log("val/bpb", s["nats"] / math.log(2) / s["bytes"], prog_bar=True)
        if self.distiller is not None:
            self.log("val/kd_loss", s["kd_nats"] / max(1, s["targets"]))

    def configure_optimizers(self) -> dict[str, Any]:
        return build_optimizer(self.model, self.optim_cfg)
