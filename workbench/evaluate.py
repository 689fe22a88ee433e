"""Mean next-token loss of a model over fixed batches, in plain torch, so it can score a split after fit (the selection
split, results.json["selection_loss"]) without a Trainer; and the standard error of such a loss over its rows."""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from workbench.blocks.documents import DocumentMasking
from workbench.data.bundle import IGNORE, Batch


@torch.no_grad()
def mean_loss(
    model: nn.Module,
    batches: Iterable[Batch],
    token_bytes: np.ndarray | None = None,
    documents: DocumentMasking | None = None,
) -> dict[str, float | int | None]:
    """`loss`: nats per labelled target over all batches together (summed, then divided once, so every target
    weighs the same, as in val/loss); `tokens`: how many targets; `bpb`: bits per UTF-8 byte of the targets, None
    unless `token_bytes` (a DataBundle's) is given and the targets hold bytes (as val/bpb). `documents`: the run's
    document masking, so a split is scored as the run trained."""
    device = next(model.parameters()).device
    per_id = None if token_bytes is None else torch.as_tensor(token_bytes, device=device)
    was_training = model.training
    model.eval()
    nats, targets, n_bytes = 0.0, 0, 0
    try:
        for x, y in batches:
            x, y = x.to(device), y.to(device)
            logits = (model(x) if documents is None else model(x, documents=documents(x))).float()
            nats += F.cross_entropy(logits.flatten(0, 1), y.flatten(), ignore_index=IGNORE, reduction="sum").item()
            labelled = y[y != IGNORE]
            targets += labelled.numel()
            if per_id is not None:
                n_bytes += int(per_id[labelled].sum())
    finally:
        model.train(was_training)
    bpb = nats / math.log(2) / n_bytes if n_bytes else None
    return {"loss": nats / max(1, targets), "bpb": bpb, "tokens": targets}


def ratio_se(nats: float, targets: float, nats_sq: float, nats_targets: float, targets_sq: float, rows: float) -> float:
    """Standard error of the loss R = Σ n_i / Σ t_i over `rows` rows (n_i: a row's summed nats, t_i: its labelled
    targets), from the sums Σn, Σt, Σn², Σnt, Σt²: the ratio estimator's delta-method SE,
    sqrt(m / (m - 1) · Σ (n_i - R t_i)²) / Σt. With every row the same length it is the SE of the mean of the rows'
    losses. It measures how much the validation set's sample of rows moves the loss (evaluation noise), not seeds'.
    NaN below 2 rows or without targets."""
    if rows < 2 or targets <= 0:
        return math.nan
    r = nats / targets
    spread = max(0.0, nats_sq - 2 * r * nats_targets + r * r * targets_sq)
    return math.sqrt(rows / (rows - 1) * spread) / targets
