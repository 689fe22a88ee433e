"""What the trainer consumes: a function from batch index to batch, fixed validation batches, and vocabulary facts."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

IGNORE = -100  # targets the loss skips (cross_entropy's default ignore_index)
Batch = tuple[torch.Tensor, torch.Tensor]  # inputs (B, T) and targets (B, T), both int64


@dataclass
class DataBundle:
    """`train(i)` depends only on (seed, i): resuming at step k replays exactly the batches an unbroken run sees."""

    train: Callable[[int], Batch]
    val: list[Batch]
    vocab_size: int  # ids the data uses; the model's vocab_size must be at least this
    token_bytes: np.ndarray | None = None  # UTF-8 bytes per id, for bits per byte; None when meaningless
    info: dict[str, Any] = field(default_factory=dict)  # recorded in results.json (source, content hash, sizes)


def windows(tokens: np.ndarray, offsets: np.ndarray, seq_len: int) -> Batch:
    """Next-token pairs from windows of seq_len + 1 tokens starting at `offsets`."""
    rows = np.stack([np.asarray(tokens[o : o + seq_len + 1], dtype=np.int64) for o in offsets])
    t = torch.from_numpy(rows)
    return t[:, :-1].contiguous(), t[:, 1:].contiguous()


def corpus_bundle(
    train_tokens: np.ndarray,
    val_tokens: np.ndarray,
    *,
    seq_len: int,
    batch_size: int,
    val_budget: int,
    seed: int,
    vocab_size: int,
    token_bytes: np.ndarray | None,
    info: dict[str, Any],
) -> DataBundle:
    """Random training windows; validation on the first `val_budget` tokens of the val split, so arms compare."""
    for split, toks in (("train", train_tokens), ("val", val_tokens)):
        if len(toks) < seq_len + 1:
            raise ValueError(f"data: the {split} split has {len(toks)} tokens, fewer than seq_len + 1 = {seq_len + 1}")
    n_val = max(1, min(val_budget, len(val_tokens) - 1) // seq_len)
    offsets = np.arange(n_val) * seq_len
    val = [windows(val_tokens, offsets[i : i + batch_size], seq_len) for i in range(0, n_val, batch_size)]
    high = len(train_tokens) - seq_len - 1

    def train(i: int) -> Batch:
        return windows(train_tokens, np.random.default_rng([seed, i]).integers(0, high + 1, batch_size), seq_len)

    info = {**info, "train_tokens": len(train_tokens), "val_tokens": len(val_tokens),
            "val_budget_tokens": int(n_val * seq_len)}  # fmt: skip
    return DataBundle(train, val, vocab_size, token_bytes, info)
