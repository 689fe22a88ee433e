"""Passkey retrieval: a digit string after a KEY marker, `distance` filler tokens, then QUERY and the digits again.

Loss only on the repeated digits. A local layer whose window is shorter than `distance` cannot see the key.
`data.source=passkey` trains on the task alone; `data.passkey_mix` mixes it into a byte-token text source
(`with_passkey_rows`), so a language model learns retrieval at its training context and the context-extension study
can measure how far that skill carries.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import numpy as np
import torch

from workbench.data.bundle import IGNORE, Batch, DataBundle, synthetic_selection
from workbench.data.byte_tokenizer import SPECIALS, VOCAB_SIZE

DIGITS = ord("0")  # passkey digits are the bytes "0".."9"
FILLER = (ord("a"), ord("z") + 1)  # filler is random lowercase letters
MIX_STREAM = 1  # batch i's passkey rows draw from default_rng([seed, i, MIX_STREAM]), apart from its text windows


def longest_distance(seq_len: int, n_digits: int) -> int:
    """The longest key-query distance whose KEY, digits, filler, QUERY and digits fit seq_len + 1 tokens."""
    return seq_len + 1 - 2 * n_digits - 2


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
    if distance > longest_distance(seq_len, n_digits):
        raise ValueError(
            f"data.distance: got {distance}; allowed: at most seq_len + 1 - 2 * num_digits - 2 = "
            f"{seq_len - 1 - 2 * n_digits} for seq_len={seq_len}, num_digits={n_digits}"
        )
    args = (cfg["batch_size"], seq_len, distance, n_digits)

    def train(i: int) -> Batch:
        return passkey_batch(np.random.default_rng([seed, i]), *args)

    val_rng = np.random.default_rng([seed, 2**32 - 1])
    val = [passkey_batch(val_rng, *args) for _ in range(cfg["val_batches"])]
    selection = synthetic_selection(cfg, lambda rng: passkey_batch(rng, *args))
    info = {"source": "passkey", "chance_accuracy": 0.1}
    return DataBundle(train, val, selection, VOCAB_SIZE, None, info, answers_only=True)


def mix_settings(cfg: Mapping[str, Any]) -> tuple[float, int]:
    """A text source's (data.passkey_mix, data.passkey_digits); configs from before they existed: no mix."""
    return cfg.get("passkey_mix", 0.0), cfg.get("passkey_digits", 5)


def check_passkey_mix(cfg: Mapping[str, Any]) -> None:
    """What `data.passkey_mix` needs of a text source, checked before any tokenising: byte tokens, room for a key."""
    (mix, n_digits), seq_len = mix_settings(cfg), cfg["seq_len"]
    if mix == 0:
        return
    if cfg["source"] == "hf":
        raise ValueError(
            f"data.passkey_mix: got {mix}; allowed: 0 for data.source=hf (passkey rows are byte tokens, not the ids "
            "of data.tokenizer); mix passkey rows into data.source=stdlib or text"
        )
    if longest_distance(seq_len, n_digits) < 0:
        raise ValueError(
            f"data.passkey_digits: got {n_digits}; allowed: at most (data.seq_len - 1) // 2 = {(seq_len - 1) // 2} "
            f"with data.passkey_mix > 0, so that the key and the query with their digits fit data.seq_len={seq_len}"
        )


def with_passkey_rows(bundle: DataBundle, mix: float, n_digits: int, seed: int) -> DataBundle:
    """Each training batch with a `mix` fraction of its rows (at random places, so every data-parallel shard gets its
    share) replaced by passkey rows, at distances uniform over 0 .. longest_distance: retrieval at every distance the
    training context holds. The row count is mix x batch size rounded up or down at random, so its mean is exact.
    Validation stays text, so val loss compares with unmixed runs. Batch i still depends only on (seed, i)."""
    if mix == 0:
        return bundle
    text = bundle.train

    def train(i: int) -> Batch:
        x, y = (t.clone() for t in text(i))  # a one-row batch's x and y can be views of one array
        rows, seq_len = x.shape
        rng = np.random.default_rng([seed, i, MIX_STREAM])
        picked = rng.choice(rows, int(mix * rows + rng.random()), replace=False)
        for row in picked:
            distance = int(rng.integers(0, longest_distance(seq_len, n_digits) + 1))
            px, py = passkey_batch(rng, 1, seq_len, distance, n_digits)
            x[row], y[row] = px[0], py[0]
        return x, y

    info = {**bundle.info, "passkey_mix": mix, "passkey_digits": n_digits}
    return replace(bundle, train=train, info=info)
