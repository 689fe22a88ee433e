"""`mean_loss`, the plain-torch score of a split, against the cross-entropy summed by hand; `ratio_se`, the standard
error of a loss that is a ratio of sums over rows, against the textbook SE of a mean (equal rows) and a bootstrap over
rows (unequal rows), both in float64."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from workbench.data.bundle import IGNORE
from workbench.evaluate import mean_loss, ratio_se


class _Table(nn.Module):
    """Logits looked up per input id: a model whose cross-entropy is easy to compute by hand."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.logits = nn.Parameter(logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits[x]


def test_mean_loss_is_the_cross_entropy_over_every_labelled_target():
    table = [[0.5, -1.0, 2.0], [1.5, 0.0, -0.5], [0.0, 0.3, 0.1]]
    batches = [(torch.tensor([[0, 1, 2], [2, 2, 0]]), torch.tensor([[1, IGNORE, 0], [2, 1, IGNORE]])),
               (torch.tensor([[1, 0, 2, 1, 0]]), torch.tensor([[0, 2, IGNORE, 1, 1]]))]  # fmt: skip
    token_bytes = np.array([1, 2, 0])
    nats, n, n_bytes = 0.0, 0, 0
    for x, y in batches:
        for i, t in zip(x.flatten().tolist(), y.flatten().tolist(), strict=True):
            if t != IGNORE:
                nats += math.log(sum(math.exp(v) for v in table[i])) - table[i][t]
                n, n_bytes = n + 1, n_bytes + int(token_bytes[t])
    model = _Table(torch.tensor(table)).train()
    got = mean_loss(model, batches, token_bytes)
    assert got["tokens"] == n == 8 and got["loss"] == pytest.approx(nats / n, rel=1e-6)
    assert got["bpb"] == pytest.approx(nats / math.log(2) / n_bytes, rel=1e-6)
    assert model.training and mean_loss(model, batches)["bpb"] is None  # mode restored; no bytes known: no bpb


def sums(nats: np.ndarray, targets: np.ndarray) -> tuple[float, ...]:
    return (nats.sum(), targets.sum(), (nats**2).sum(), (nats * targets).sum(), (targets**2).sum(), len(nats))


def test_equal_rows_give_the_se_of_the_mean_of_row_losses():
    rng = np.random.default_rng(0)
    targets = np.full(50, 63.0)
    losses = rng.gamma(4.0, 0.5, 50)  # per-row mean losses
    expected = losses.std(ddof=1) / np.sqrt(50)
    assert ratio_se(*sums(losses * targets, targets)) == pytest.approx(expected, rel=1e-9)


def test_unequal_rows_match_a_bootstrap_of_the_ratio():
    rng = np.random.default_rng(1)
    targets = rng.integers(5, 60, 400).astype(float)  # e.g. passkey rows where only some positions are labelled
    nats = targets * rng.gamma(4.0, 0.5, 400)
    draws = rng.integers(0, 400, (20_000, 400))
    boot = nats[draws].sum(1) / targets[draws].sum(1)
    # the bootstrap SD itself carries ~0.5% Monte-Carlo error (20,000 draws) and the delta method O(1/m) bias
    assert ratio_se(*sums(nats, targets)) == pytest.approx(boot.std(ddof=1), rel=0.03)


def test_one_row_or_no_targets_has_no_se():
    assert np.isnan(ratio_se(3.0, 2.0, 9.0, 6.0, 4.0, 1)) and np.isnan(ratio_se(0.0, 0.0, 0.0, 0.0, 0.0, 5))
