"""The LightningModule: next-token loss on a `Transformer`, with the metrics every ablation arm reports."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import lightning as L
import numpy as np
import torch
from torch import nn
from torchmetrics import SumMetric

from workbench.accounting import on_policy_row_flops, training_flops
from workbench.blocks.documents import DocumentMasking
from workbench.checkpoints import MODEL_CONFIG_KEY
from workbench.config import ModelConfig
from workbench.data.bundle import IGNORE, Batch
from workbench.distill import Distiller
from workbench.evaluate import ratio_se
from workbench.losses import cross_entropy_sum, row_cross_entropy, z_loss_sum
from workbench.model import build_model
from workbench.optim import build_optimizer
from workbench.training.strategy import fully_shard_model, total_grad_norm


class NonFiniteLossError(FloatingPointError):
    """A NaN or inf training loss; `step` is the optimiser step it appeared at (results.json's `failed_step`)."""

    def __init__(self, loss: float, step: int) -> None:
        super().__init__(f"train loss is {loss} at step {step}")
        self.step = step


# the validation sums; the per-row ones (n_i: a row's nats, t_i: its targets) give val/loss's standard error
VAL_SUMS = ("nats", "targets", "correct", "bytes", "kd_nats", "rows", "nats_sq", "nats_targets", "targets_sq")


class LMModule(L.LightningModule):
    def __init__(
        self,
        model_cfg: ModelConfig,
        optim_cfg: Mapping[str, Any],
        token_bytes: np.ndarray | None = None,
        compile: bool = False,
        distiller: Distiller | None = None,
        documents: DocumentMasking | None = None,
        answers_only: bool = False,
    ) -> None:
        """`documents`: the run's document masking (`data.document_mask`), on training and validation batches;
        `answers_only`: every target is an answer (`DataBundle.answers_only`): log the answers' loss and accuracy."""
        super().__init__()
        self.model_cfg, self.optim_cfg, self.compile = model_cfg, dict(optim_cfg), compile
        self.documents, self.answers_only = documents, answers_only
        self.distiller = distiller  # a plain object: its teacher is neither saved, counted nor optimised
        self.model = build_model(model_cfg)
        self.register_buffer(
            "token_bytes", None if token_bytes is None else torch.as_tensor(token_bytes), persistent=False
        )
        self.flops_per_batch: int | None = None  # read by ThroughputMonitor for MFU
        # validation sums stay on the device until the epoch ends (no host sync per batch); every rank scores the
        # whole validation set, so they need no reduction across ranks
        self.val_sums = nn.ModuleDict(
            {k: SumMetric(nan_strategy="disable", sync_on_compute=False).set_dtype(torch.float64) for k in VAL_SUMS}
        )
        # the last train loss and the first non-finite one with its step, on the device: read at the log interval
        self._last_loss: torch.Tensor | None = None
        self._bad_loss: torch.Tensor | None = None
        self._bad_step: torch.Tensor | None = None

    def configure_model(self) -> None:
        if self.device_mesh is not None:  # set by ModelParallelStrategy: trainer.strategy=fsdp2
            fully_shard_model(self.model, self.device_mesh["data_parallel"])
        if self.compile:
            self.model = torch.compile(self.model)

    def set_flops_per_batch(self, batch_size: int, seq_len: int) -> None:
        """Forward + backward FLOPs of one batch for MFU, in the project's one convention (`workbench.accounting`).

        Attention counts the pairs attended, window-aware, so MFU compares across local:global arms. An on-policy
        row counts its sampling and its training on prompt and continuation instead (the teacher is not counted).
        """
        rows = self.distiller.on_policy_rows(batch_size) if self.distiller is not None else 0
        self.flops_per_batch = (batch_size - rows) * training_flops(self.model_cfg, seq_len)
        if rows:
            op = self.distiller.on_policy
            self.flops_per_batch += rows * on_policy_row_flops(self.model_cfg, op.prompt_len, op.new_tokens)

    @property
    def last_train_loss(self) -> float:
        """The last training step's loss (NaN before any step)."""
        return math.nan if self._last_loss is None else float(self._last_loss)

    def _nats(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """Summed next-token loss of the batch, and the logits (in the model's output dtype)."""
        x, y = batch
        logits = self.model(x) if self.documents is None else self.model(x, documents=self.documents(x))
        return cross_entropy_sum(logits, y), logits

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        """Minimises train/loss (next-token, distillation or their mix; on-policy rows by GKD's divergence, each row
        weighing the same) + train/z_loss (`optim.z_loss` times the mean log² Z over the other rows' scored positions;
        computed and logged only when the coefficient is not 0), so train/loss compares across arms with and without
        the z-loss."""
        x, y = batch
        rows = self.distiller.on_policy_rows(x.shape[0]) if self.distiller is not None else 0
        loss, z_loss = self._off_policy_loss(x[rows:], y[rows:]) if rows < x.shape[0] else (None, None)
        if rows:
            divergence = self._on_policy_loss(x[:rows], batch_idx)
            self.log("train/on_policy_jsd", divergence)
            loss = divergence if loss is None else (rows * divergence + (x.shape[0] - rows) * loss) / x.shape[0]
        objective = loss if z_loss is None else loss + z_loss
        self._watch(objective.detach())
        if self.global_step % self.trainer.log_every_n_steps == 0:
            self._raise_if_diverged()  # before this step's metrics are logged: every logged loss is finite
        self.log("train/loss", loss, prog_bar=True, sync_dist=True)  # the global batch's mean under DDP/FSDP
        self.log("train/lr", self.optimizers().param_groups[0]["lr"])
        return objective

    def _off_policy_loss(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Next-token loss of the rows, mixed with distillation to the teacher's targets where the distiller has
        an off-policy kind; and the z-loss over them (None when `optim.z_loss` is 0)."""
        nats, logits = self._nats((x, y))
        targets = (y != IGNORE).sum().clamp(min=1)
        loss = nats / targets
        if self.answers_only:  # the next-token loss before any distillation mix, and greedy accuracy, on the answers
            correct = ((logits.argmax(-1) == y) & (y != IGNORE)).sum() / targets
            self.log_dict({"train/answer_loss": loss, "train/answer_accuracy": correct}, sync_dist=True)
        if self.distiller is not None and self.distiller.kind != "none":
            kd = self.distiller.kd_loss(logits, x, y)
            self.log_dict({"train/kd_loss": kd, "train/next_token_loss": loss})
            loss = self.distiller.mix(kd, loss)
        elif self.distiller is not None:
            self.log("train/next_token_loss", loss)
        z_loss = None
        if z_coef := self.optim_cfg.get("z_loss", 0.0):
            z_loss = z_coef * z_loss_sum(logits, y) / targets
            self.log("train/z_loss", z_loss, sync_dist=True)
        return loss, z_loss

    def _on_policy_loss(self, x: torch.Tensor, batch_idx: int) -> torch.Tensor:
        """The student continues the rows' prompts (no gradient), then learns from the teacher's scores of them."""
        op = self.distiller.on_policy
        sequences = op.sample(self.model, x, op.generator(x.device, self.global_step, batch_idx))
        return op.loss(self.model, self.distiller.teacher, sequences)

    def _watch(self, loss: torch.Tensor) -> None:
        """Keep the first non-finite loss and its step on the device: no host sync per step."""
        if self._bad_step is None:
            self._bad_step = torch.full((), -1, dtype=torch.long, device=loss.device)
            self._bad_loss = torch.zeros((), dtype=loss.dtype, device=loss.device)
        first = ~torch.isfinite(loss) & (self._bad_step < 0)
        self._bad_step = torch.where(first, self.global_step, self._bad_step)
        self._bad_loss = torch.where(first, loss, self._bad_loss)
        self._last_loss = loss

    def _raise_if_diverged(self) -> None:
        """Fail the run (an ablation grid records it and goes on) if a loss went NaN/inf, with the step it did.

        Synchronises with the device: called every `log_every_n_steps`, before validation, before a checkpoint is
        written and when training ends, so no checkpoint or validation ever sees the weights of a diverged run.
        """
        if self._bad_step is not None and (step := int(self._bad_step)) >= 0:
            raise NonFiniteLossError(float(self._bad_loss), step)

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        # the accumulated gradient, before clipping
        self.log("train/grad_norm", total_grad_norm(self.model))

    def on_fit_start(self) -> None:
        if self.distiller is not None:
            self.distiller.to(self.device)

    def on_train_end(self) -> None:
        self._raise_if_diverged()

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self._raise_if_diverged()
        checkpoint[MODEL_CONFIG_KEY] = self.model_cfg.to_dict()  # a checkpoint rebuilds its model on its own

    def on_validation_epoch_start(self) -> None:
        self._raise_if_diverged()
        for metric in self.val_sums.values():
            metric.reset()
        if self.distiller is not None:
            self.distiller.to(self.device)  # also for trainer.validate outside fit

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        nats, logits = self._nats(batch)
        row_nats = row_cross_entropy(logits, batch[1]).double()  # val/loss stays `nats`: the same number as before
        row_targets = (batch[1] != IGNORE).sum(-1).double()
        y = batch[1].flatten()
        mask = y != IGNORE
        s = self.val_sums
        s["nats"].update(nats)
        s["targets"].update(mask.sum())
        s["rows"].update(row_nats.numel())
        s["nats_sq"].update((row_nats**2).sum())
        s["nats_targets"].update((row_nats * row_targets).sum())
        s["targets_sq"].update((row_targets**2).sum())
        s["correct"].update(((logits.flatten(0, 1).argmax(-1) == y) & mask).sum())
        if self.token_bytes is not None:
            s["bytes"].update((self.token_bytes[y.clamp(min=0)] * mask).sum())
        if self.distiller is not None:  # the full cross-entropy to the teacher: the same for every k
            s["kd_nats"].update(self.distiller.full_kd_sum(logits, *batch))

    def on_validation_epoch_end(self) -> None:
        """Sums over the whole fixed validation budget, so every arm is scored on the same tokens."""
        s = {k: metric.compute() for k, metric in self.val_sums.items() if metric.update_called}
        targets = s["targets"].clamp(min=1)
        self.log("val/loss", s["nats"] / targets, prog_bar=True)
        sums = (s[k].item() for k in ("nats", "targets", "nats_sq", "nats_targets", "targets_sq", "rows"))
        self.log("val/loss_se", ratio_se(*sums))  # the evaluation's own noise: results.json's val_loss_se
        self.log("val/accuracy", s["correct"] / targets)
        if self.token_bytes is not None:
            self.log("val/bpb", s["nats"] / math.log(2) / s["bytes"], prog_bar=True)
        if self.distiller is not None:
            self.log("val/kd_loss", s["kd_nats"] / targets)

    def configure_optimizers(self) -> dict[str, Any]:
        """Fused AdamW, unfused under fp16's GradScaler (`16-mixed`) so clipping sees unscaled gradients."""
        return build_optimizer(self.model, self.optim_cfg, fused=str(self.trainer.precision) != "16-mixed")

    def configure_gradient_clipping(
        self, optimizer: torch.optim.Optimizer, gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str | None = None,
    ) -> None:  # fmt: skip
        """Lightning's clipping, but a fused AdamW clips here with torch: Lightning refuses every fused optimizer,
        since under fp16 one unscales inside its step, after clipping. A fused one runs only without a GradScaler
        (`configure_optimizers`), so the gradients clipped here are the true ones."""
        fused = isinstance(optimizer, torch.optim.Optimizer) and optimizer.defaults.get("fused")
        if not (gradient_clip_val and fused):
            self.clip_gradients(optimizer, gradient_clip_val, gradient_clip_algorithm)
            return
        params = [p for group in optimizer.param_groups for p in group["params"]]
        if gradient_clip_algorithm == "value":
            torch.nn.utils.clip_grad_value_(params, gradient_clip_val)
        else:
            torch.nn.utils.clip_grad_norm_(params, gradient_clip_val)
