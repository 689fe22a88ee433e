"""`mean_loss`, the plain-torch score of a split, against the cross-entropy summed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from workbench.data.bundle import IGNORE
from workbench.evaluate import mean_loss


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
