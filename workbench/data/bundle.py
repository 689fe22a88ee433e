"""What the trainer consumes: a batch-index -> batch function, fixed val and selection batches, vocabulary facts."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from numbers import Integral
from typing import Any

import numpy as np
import torch

IGNORE = -100  # targets the loss skips (cross_entropy's default ignore_index)
Batch = tuple[torch.Tensor, torch.Tensor]  # inputs (B, T) and targets (B, T), both int64
VAL_SEED = 0x7A1  # where each stratum's window sits in val: fixed, so every arm and seed scores the same tokens
SELECTION_SEED = 0x5E1  # the same for the selection split
# mqar/passkey selection batches, the same for every seed: three words with a last word that is neither 0 nor 1, so no
# train ([seed, i]), val ([seed, 2**32 - 1]) or passkey-mix ([seed, i, 1]) generator draws this stream
SYNTHETIC_SELECTION_STREAM = (2**32 - 2, 2**32 - 2, 2)


@dataclass
class DataBundle:
    """`train(i)` depends only on (seed, i): resuming at step k replays exactly the batches an unbroken run sees.
    `val` is the reported score; `selection` is a second held-out set for choices made from data (an arm's best
    learning rate, an early-stopping step), so the reported number is not the one a choice was tuned on."""

    train: Callable[[int], Batch]
    val: list[Batch]
    selection: list[Batch]
    vocab_size: int  # ids the data uses; the model's vocab_size must be at least this
    token_bytes: np.ndarray | None = None  # UTF-8 bytes per id, for bits per byte; None when meaningless
    info: dict[str, Any] = field(default_factory=dict)  # recorded in results.json (source, content hash, sizes)
    # the token that ends every document in the packed streams (EOS), so a model can mask attention to each
    # document; None: the source marks no documents (synthetic tasks, a tokenizer source without data.eos_token)
    document_separator: int | None = None
    # every target is an answer (a synthetic task's): training also logs train/answer_loss and train/answer_accuracy
    answers_only: bool = False


@dataclass(frozen=True)
class HeldOut:
    """A held-out split: its token stream, its documents' token lengths in stream order, and its scoring budget."""

    tokens: np.ndarray
    doc_lengths: np.ndarray
    budget: int


def windows(tokens: np.ndarray, offsets: np.ndarray, seq_len: int) -> Batch:
    """Next-token pairs from windows of seq_len + 1 tokens starting at `offsets`."""
    rows = np.stack([np.asarray(tokens[o : o + seq_len + 1], dtype=np.int64) for o in offsets])
    t = torch.from_numpy(rows)
    return t[:, :-1].contiguous(), t[:, 1:].contiguous()


def eval_offsets(n_tokens: int, seq_len: int, budget: int, seed: int) -> np.ndarray:
    """Starts of budget // seq_len windows, stratified: the stream is cut into that many equal strata and each holds
    one window at a seeded random place. So every document contributes in proportion to its length (within two
    windows), the estimate of the whole split's token-weighted loss has less variance than from i.i.d. windows (no
    document over- or under-drawn by chance), no target is scored twice, and the random place avoids aliasing with
    structure every file repeats (a licence header). A budget covering the split scores every whole window."""
    n = max(1, min(budget, n_tokens - 1) // seq_len)
    stride = (n_tokens - 1) // n  # >= seq_len, so window k's targets lie in (k * stride, (k + 1) * stride]
    return np.arange(n) * stride + np.random.default_rng(seed).integers(0, stride - seq_len + 1, n)


def documents_touched(offsets: np.ndarray, seq_len: int, doc_lengths: np.ndarray) -> int:
    """Distinct documents holding at least one scored target (tokens o + 1 .. o + seq_len of each window)."""
    ends = np.cumsum(doc_lengths)
    first = np.searchsorted(ends, offsets + 1, side="right")
    last = np.searchsorted(ends, offsets + seq_len, side="right")
    marks = np.zeros(len(doc_lengths) + 1, dtype=np.int64)
    np.add.at(marks, first, 1)
    np.add.at(marks, last + 1, -1)
    return int((np.cumsum(marks)[:-1] > 0).sum())


def _scored(held: HeldOut, seq_len: int, batch_size: int, seed: int) -> tuple[list[Batch], int, int]:
    """(batches, tokens scored, documents touched) of one held-out split."""
    offsets = eval_offsets(len(held.tokens), seq_len, held.budget, seed)
    batches = [windows(held.tokens, offsets[i : i + batch_size], seq_len) for i in range(0, len(offsets), batch_size)]
    return batches, len(offsets) * seq_len, documents_touched(offsets, seq_len, held.doc_lengths)


def corpus_bundle(
    train_tokens: np.ndarray,
    val: HeldOut,
    selection: HeldOut,
    *,
    seq_len: int,
    batch_size: int,
    seed: int,
    vocab_size: int,
    token_bytes: np.ndarray | None,
    info: dict[str, Any],
    document_separator: int | None = None,
) -> DataBundle:
    """Random training windows; val and selection windows drawn across each split (`eval_offsets`) with seeds fixed
    apart from the run's, so every arm and seed is scored on the same tokens."""
    for split, toks in (("train", train_tokens), ("val", val.tokens), ("selection", selection.tokens)):
        if len(toks) < seq_len + 1:
            raise ValueError(f"data: the {split} split has {len(toks)} tokens, fewer than seq_len + 1 = {seq_len + 1}")
    val_batches, val_scored, val_docs = _scored(val, seq_len, batch_size, VAL_SEED)
    sel_batches, sel_scored, sel_docs = _scored(selection, seq_len, batch_size, SELECTION_SEED)
    high = len(train_tokens) - seq_len - 1

    def train(i: int) -> Batch:
        return windows(train_tokens, np.random.default_rng([seed, i]).integers(0, high + 1, batch_size), seq_len)

    info = {**info, "train_tokens": len(train_tokens), "val_tokens": len(val.tokens), "val_budget_tokens": val_scored,
            "val_documents_scored": val_docs, "selection_tokens": len(selection.tokens),
            "selection_budget_tokens": sel_scored, "selection_documents_scored": sel_docs}  # fmt: skip
    return DataBundle(train, val_batches, sel_batches, vocab_size, token_bytes, info, document_separator)


def held_out_setting(cfg: Mapping[str, Any], key: str, like: str) -> Any:
    """`data.<key>`, where unset or null the value of `data.<like>`: by default selection is sized as val."""
    value = cfg.get(key)
    return cfg[like] if value is None else value


def synthetic_selection(cfg: Mapping[str, Any], batch: Callable[[np.random.Generator], Batch]) -> list[Batch]:
    """`data.selection_batches` (unset or null: data.val_batches) batches of a synthetic task, from a stream fixed
    apart from the run's seed, so every arm and seed picks its settings on the same sequences."""
    n = held_out_setting(cfg, "selection_batches", "val_batches")
    if isinstance(n, bool) or not isinstance(n, Integral) or n < 1:
        raise ValueError(f"data.selection_batches: got {n!r}; allowed: an integer >= 1 (unset or null: "
                         "data.val_batches)")  # fmt: skip
    rng = np.random.default_rng(SYNTHETIC_SELECTION_STREAM)
    return [batch(rng) for _ in range(n)]
