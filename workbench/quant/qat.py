"""Quantisation-aware fine-tuning as the Gemma 3 report describes it: start from the bf16 checkpoint, fake-quantise
the weights, and train towards the probabilities of the frozen non-quantised model rather than the data labels.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from workbench.distill import full_kd_loss
from workbench.quant.fake_quant import prepare_fake_quant
from workbench.quant.formats import QuantFormat

Batch = torch.Tensor | tuple[torch.Tensor, torch.Tensor]  # token windows (B, T + 1), or (inputs, labels)


def split_batch(batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs, labels) from either batch form."""
    if isinstance(batch, torch.Tensor):
        return batch[:, :-1], batch[:, 1:]
    return batch


def prepare_qat(model: nn.Module, fmt: str | QuantFormat, embedding: bool = False) -> tuple[nn.Module, nn.Module]:
    """(student, teacher): a frozen copy of the model as it is now, then the model itself made fake-quantised."""
    teacher = copy.deepcopy(model).eval().requires_grad_(False)
    return prepare_fake_quant(model, fmt, embedding), teacher


def qat_loss(student: nn.Module, teacher: nn.Module, batch: Batch, alpha: float = 0.0) -> torch.Tensor:
    """Soft cross-entropy of the fake-quantised student to the frozen teacher's distribution; `alpha` mixes in
    the next-token loss on the labels."""
    inputs, labels = split_batch(batch)
    with torch.no_grad():
        teacher_logits = teacher(inputs)
    return full_kd_loss(student(inputs), teacher_logits, labels, alpha)


@torch.no_grad()
def evaluate_quantized(model: nn.Module, batches: Iterable[Batch]) -> float:
    """Mean next-token cross-entropy over all label tokens (not -100) of `batches`."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for batch in batches:
        inputs, labels = split_batch(batch)
        logits = model(inputs).float()
        total += F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100, reduction="sum").item()
        count += int((labels != -100).sum())
    model.train(was_training)
    return total / count if count else math.nan
