"""`z_loss_sum` against float64 autograd of its definition, Σ log² Z over scored positions, and its bf16 chunking."""

import pytest
import torch

from workbench import losses
from workbench.data.bundle import IGNORE
from workbench.losses import z_loss_sum


def reference(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    lse = torch.logsumexp(logits.double(), dim=-1)
    return (lse.square() * (targets != IGNORE)).sum()


def batch(dtype: torch.dtype, vocab: int = 50) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    logits = (3 * torch.randn(3, 7, vocab, generator=gen) + 2).to(dtype)  # log Z far from 0
    targets = torch.randint(0, vocab, (3, 7), generator=gen)
    targets[0, :4] = IGNORE
    return logits.requires_grad_(True), targets


@pytest.mark.parametrize("chunk", [1 << 20, 64])  # one chunk; rows of 50 in chunks of one row
def test_value_and_gradient_equal_float64_autograd(monkeypatch, chunk):
    monkeypatch.setattr(losses, "CE_CHUNK_ELEMENTS", chunk)
    logits, targets = batch(torch.float64)
    got = z_loss_sum(logits, targets)
    (grad,) = torch.autograd.grad(2.5 * got, logits)
    expected = reference(logits, targets)
    (expected_grad,) = torch.autograd.grad(2.5 * expected, logits)
    eps = torch.finfo(torch.float64).eps
    assert abs(got - expected) <= 64 * eps * expected
    assert (grad - expected_grad).abs().max() <= 64 * eps * expected_grad.abs().max()
    assert grad[0, :4].abs().max() == 0  # ignored positions get no gradient


def test_bfloat16_logits_are_summed_in_float32():
    """bf16 logits, float32 sums: the value equals float64's on the same (rounded) logits to float32 precision."""
    logits, targets = batch(torch.bfloat16)
    got = z_loss_sum(logits, targets)
    assert got.dtype == torch.float32
    expected = reference(logits, targets)
    assert abs(got.double() - expected) <= 64 * torch.finfo(torch.float32).eps * expected
    (grad,) = torch.autograd.grad(got, logits)
    assert grad.dtype == torch.bfloat16
