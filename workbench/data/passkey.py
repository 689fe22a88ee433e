"""Passkey retrieval: a digit string after a KEY marker, `distance` filler tokens, then QUERY and the digits again.

Loss only on the repeated digits. A local layer whose window is shorter than `distance` cannot see the key.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from workbench.data.bundle import IGNORE, Batch, DataBundle
from workbench.data.byte_tokenizer import SPECIALS, VOCAB_SIZE

DIGITS = ord("0")  # passkey digits are the bytes "0".."9"
FILLER = (ord("a"), ord("z") + 1)  # filler is random lowercase letters


def passkey_batch(rng: np.random.Generator, batch_size: int, seq_len: int, distance: int, n_digits: int) -> Batch:
    """Sequences of seq_len + 1 tokens; the key block starts at a random offset within the slack."""
    body = 2 * n_digits + 2 + distance
    seq = rng.integers(*FILLER, (batch_size, seq_len + 1))
    digits = DIGITS + rng.integers(0, 10, (batch_size, n_digits))
    starts = rng.integers(0, seq_len + 1 - body + 1, batch_size)
    answer = np.zeros_like(seq, dtype=bool)
    for b, s in enumerate(starts):
        q = s + 1 + n_digits + distance
        seq[b, s], seq[b, s + 1 : s + 1 + n_digits] = SPECIALS["key"], digits[b]
        seq[b, q], seq[b, q + 1 : q + 1 + n_digits] = SPECIALS["query"], digits[b]
        answer[b, q + 1 : q + 1 + n_digits] = True
    t = torch.from_numpy(seq.astype(np.int64))
    x, y = t[:, :-1].clone(), t[:, 1:].clone()
    y[~torch.from_numpy(answer[:, 1:])] = IGNORE
    return x, y


def passkey_bundle(cfg: Mapping[str, Any], seed: int) -> DataBundle:
    seq_len, distance, n_digits = cfg["seq_len"], cfg["distance"], cfg["num_digits"]
    if 2 * n_digits + 2 + distance > seq_len + 1:
        raise ValueError(
            f"data.distance: got {distance}; allowed: at most seq_len + 1 - 2 * num_digits - 2 = "
            f"{seq_len - 1 - 2 * n_digits} for seq_len={seq_len}, num_digits={n_digits}"
        )
    args = (cfg["batch_size"], seq_len, distance, n_digits)

    def train(i: int) -> Batch:
        return passkey_batch(np.random.default_rng([seed, i]), *args)

    val_rng = np.random.default_rng([seed, 2**32 - 1])
    val = [passkey_batch(val_rng, *args) for _ in range(cfg["val_batches"])]
    return DataBundle(train, val, VOCAB_SIZE, None, {"source": "passkey", "chance_accuracy": 0.1})
