"""Multi-query associative recall: key-value pairs, then queried keys whose values must be recalled.

Layout: k1 v1 ... kn vn | q1 v(q1) ... qm v(qm); loss only on the recalled values. Keys and values come from
disjoint id ranges and are distinct within a sequence (as in Zoology, Arora et al. 2023), so a model that only
guesses among the values in its context scores exactly 1 / num_pairs: recall means accuracy well above that, not
just above 1 / num_values. Recalling a pair far back needs attention that reaches it, which separates local from global.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from workbench.data.bundle import IGNORE, Batch, DataBundle, synthetic_selection


def _distinct(rng: np.random.Generator, batch_size: int, n: int, k: int) -> np.ndarray:
    """(batch_size, k) ids from range(n), distinct within each row."""
    return np.argsort(rng.random((batch_size, n)), axis=1)[:, :k]


def mqar_batch(rng: np.random.Generator, batch_size: int, n_pairs: int, n_queries: int, n_keys: int, n_values: int):
    keys = _distinct(rng, batch_size, n_keys, n_pairs)
    values = n_keys + _distinct(rng, batch_size, n_values, n_pairs)
    asked = rng.integers(0, n_pairs, (batch_size, n_queries))
    rows = np.arange(batch_size)[:, None]
    context = np.stack([keys, values], axis=2).reshape(batch_size, -1)
    queries = np.stack([keys[rows, asked], values[rows, asked]], axis=2).reshape(batch_size, -1)
    seq = torch.from_numpy(np.concatenate([context, queries], axis=1).astype(np.int64))
    x, y = seq[:, :-1].clone(), seq[:, 1:].clone()
    answered = torch.zeros_like(y, dtype=torch.bool)
    answered[:, 2 * n_pairs :: 2] = True  # positions holding a query key predict its value
    y[~answered] = IGNORE
    return x, y


def mqar_bundle(cfg: Mapping[str, Any], seed: int) -> DataBundle:
    n_pairs, n_keys, n_values = cfg["num_pairs"], cfg["num_keys"], cfg["num_values"]
    if n_pairs > min(n_keys, n_values):
        raise ValueError(f"data.num_pairs: got {n_pairs}; allowed: at most data.num_keys={n_keys} and "
                         f"data.num_values={n_values} (keys and values are distinct within a sequence)")  # fmt: skip
    args = (cfg["batch_size"], n_pairs, cfg["num_queries"], n_keys, n_values)

    def train(i: int) -> Batch:
        return mqar_batch(np.random.default_rng([seed, i]), *args)

    val_rng = np.random.default_rng([seed, 2**32 - 1])  # a stream train() never draws from
    val = [mqar_batch(val_rng, *args) for _ in range(cfg["val_batches"])]
    selection = synthetic_selection(cfg, lambda rng: mqar_batch(rng, *args))
    info = {"source": "mqar", "chance_accuracy": 1 / n_values, "context_guess_accuracy": 1 / n_pairs,
            "seq_len": 2 * (n_pairs + cfg["num_queries"])}  # fmt: skip
    return DataBundle(train, val, selection, n_keys + n_values, None, info, answers_only=True)
