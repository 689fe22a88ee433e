"""Quantisation-aware fine-tuning as the Gemma 3 report describes it: start from the bf16 checkpoint, fake-quantise
the weights, and train towards the probabilities of the frozen non-quantised model rather than the data labels.
A quantised model is scored like any other: `workbench.evaluate.mean_loss`.
"""

from __future__ import annotations

import copy

import torch
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
