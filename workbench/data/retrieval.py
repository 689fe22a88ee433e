"""Retrieval by content, graded by distance: key-value pairs among distractors, then keys again; say their values.

Layout of the seq_len + 1 tokens of a row: distractors with `num_pairs` (key, value) pairs at random places, then
QUERY and `num_queries` of the pairs again (key, value), pair 0 first. The loss is on those values only. A queried key
appears nowhere else in the row (keys are distinct within a row and never distractors), so the answer is found by
content, not by position: an induction-style circuit (a previous-token head at the value, a key-matching head at the
query) whose matching head must reach the pair. The distance of a query is its key's position minus its pair's key
position. Pair 0's distance is drawn uniformly within a bucket of `distance_edges`, the buckets taken in turn (from a
random first one), so every batch of at least as many rows as buckets holds every bucket; the other pairs sit at
random places, so the further queries (`num_queries` > 1, more answers per row for the same compute) fall wherever
their pairs do. Values are drawn independently of everything else, so a model that cannot see the pair scores exactly
chance, 1 / num_values.

Ids: keys [0, K), values [K, K + V), distractors [K + V, K + V + D), then QUERY: K + V + D + 1 ids in all.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import pairwise
from typing import Any

import numpy as np
import torch

from workbench.data.bundle import IGNORE, Batch, DataBundle, synthetic_selection

MIN_DISTANCE = 3  # the queried pair's value must sit before QUERY: key at q - d, value at q - d + 1 <= q - 2


def farthest(seq_len: int, n_queries: int) -> int:
    """The largest distance pair 0 can have: its key at position 0, its query key at seq_len + 1 - 2 x num_queries."""
    return seq_len + 1 - 2 * n_queries


def default_edges(seq_len: int) -> list[int]:
    """Bucket edges when `data.distance_edges` is null: 3, then powers of two from 8 below seq_len, then seq_len."""
    edges, e = [MIN_DISTANCE], 8
    while e < seq_len:
        edges.append(e)
        e *= 2
    return [*edges, seq_len] if seq_len > MIN_DISTANCE else edges


def resolved_edges(cfg: Mapping[str, Any]) -> list[int]:
    edges = cfg.get("distance_edges")
    return default_edges(cfg["seq_len"]) if edges is None else [int(e) for e in edges]


def bucket_labels(edges: Sequence[int]) -> list[str]:
    """`lo-hi` (both ends included) for each bucket [lo, hi) of `edges`."""
    return [f"{lo}-{hi - 1}" for lo, hi in pairwise(edges)]


def check_retrieval(cfg: Mapping[str, Any]) -> None:
    """Every rule between the source's fields, before any row is drawn (ValueError naming the field)."""
    seq_len, n_pairs, n_keys = cfg["seq_len"], cfg["num_pairs"], cfg["num_keys"]
    n_queries = cfg.get("num_queries", 1)
    if n_pairs > n_keys:
        raise ValueError(f"data.num_pairs: got {n_pairs}; allowed: at most data.num_keys={n_keys} (keys are distinct "
                         "within a row)")  # fmt: skip
    if not 1 <= n_queries <= n_pairs:
        raise ValueError(f"data.num_queries: got {n_queries}; allowed: 1 to data.num_pairs={n_pairs} (each query asks "
                         "for a different pair)")  # fmt: skip
    if seq_len < (least := 3 * n_pairs + 2 * n_queries - 1):
        raise ValueError(f"data.seq_len: got {seq_len}; allowed: at least 3 x data.num_pairs + 2 x "
                         f"data.num_queries - 1 = {least} (room for {n_pairs} pairs among distractors, QUERY and "
                         "the queries)")  # fmt: skip
    edges = cfg.get("distance_edges")
    last = farthest(seq_len, n_queries)
    shown = default_edges(seq_len) if edges is None else list(edges)
    rule = (f"allowed: null (3, powers of two from 8, seq_len) or at least two strictly increasing integers from "
            f"{MIN_DISTANCE} (the nearest a pair can be to its query) to {last + 1} (data.seq_len={seq_len} + 2 - 2 x "
            f"data.num_queries); bucket [a, b) holds distances a..b-1, the farthest possible is {last}")  # fmt: skip
    ok = (len(shown) >= 2 and all(isinstance(e, int) and not isinstance(e, bool) for e in shown)
          and all(a < b for a, b in pairwise(shown))
          and shown[0] >= MIN_DISTANCE and shown[-1] <= last + 1)  # fmt: skip
    if not ok:
        why = f" (the default for data.seq_len={seq_len})" if edges is None else ""
        raise ValueError(f"data.distance_edges: got {shown}{why}; {rule}")
    if cfg["batch_size"] < (n := len(shown) - 1):
        raise ValueError(f"data.batch_size: got {cfg['batch_size']}; allowed: at least the number of distance buckets, "
                         f"{n} (len(data.distance_edges) - 1), so that every batch holds every bucket")  # fmt: skip


def vocab_size(n_keys: int, n_values: int, n_distractors: int) -> int:
    return n_keys + n_values + n_distractors + 1


def _place_pairs(rng: np.random.Generator, length: int, taken: int, count: int) -> list[int]:
    """Starts of `count` pairs among positions 0..length-1 apart from the pair at `taken`, none overlapping: each
    placed at random among the starts still free. Each pair removes at most 3 free starts, so length >= 3 x (count
    + 1) - 1 (check_retrieval's seq_len rule) always leaves one."""
    free = np.ones(length, dtype=bool)
    free[taken : taken + 2] = False
    starts = []
    for _ in range(count):
        options = np.flatnonzero(free[:-1] & free[1:])
        s = int(options[rng.integers(len(options))])
        free[s : s + 2] = False
        starts.append(s)
    return starts


def query_positions(seq_len: int, n_queries: int) -> np.ndarray:
    """The input positions of the query keys (their targets are the values): the last 2 x num_queries tokens."""
    return seq_len + 1 - 2 * n_queries + 2 * np.arange(n_queries)


def retrieval_batch(
    rng: np.random.Generator, batch_size: int, seq_len: int, n_pairs: int, n_keys: int, n_values: int,
    n_distractors: int, edges: Sequence[int], n_queries: int = 1,
) -> Batch:  # fmt: skip
    """Rows of seq_len inputs and targets; the only targets not IGNORE are the queried pairs' values, at the query
    keys' positions (the last num_queries odd-offset positions)."""
    query = vocab_size(n_keys, n_values, n_distractors) - 1
    seq = n_keys + n_values + rng.integers(0, n_distractors, (batch_size, seq_len + 1))
    keys = np.argsort(rng.random((batch_size, n_keys)), axis=1)[:, :n_pairs]  # distinct within a row
    values = n_keys + rng.integers(0, n_values, (batch_size, n_pairs))  # pairs 0..num_queries-1 are queried
    lo, hi = np.asarray(edges[:-1]), np.asarray(edges[1:])
    bucket = (rng.integers(len(lo)) + np.arange(batch_size)) % len(lo)
    distance = rng.integers(lo[bucket], hi[bucket])
    q = query_positions(seq_len, n_queries)  # QUERY sits at q[0] - 1, the pairs in 0..q[0]-2
    for b in range(batch_size):
        start = q[0] - distance[b]
        starts = np.array([start, *_place_pairs(rng, q[0] - 1, start, n_pairs - 1)])
        seq[b, starts], seq[b, starts + 1] = keys[b], values[b]
    seq[:, q[0] - 1] = query
    seq[:, q], seq[:, q + 1] = keys[:, :n_queries], values[:, :n_queries]
    t = torch.from_numpy(seq.astype(np.int64))
    x, y = t[:, :-1].clone(), t[:, 1:].clone()
    answer = torch.zeros_like(y, dtype=torch.bool)
    answer[:, torch.from_numpy(q)] = True
    y[~answer] = IGNORE
    return x, y


def query_distances(x: torch.Tensor, positions: Sequence[int] | np.ndarray | None = None) -> torch.Tensor:
    """Each query's distance: its key's position (`positions`; default the last one) minus that key's earlier, only
    other, position. Shape (batch, len(positions)), or (batch,) for the default."""
    if positions is None:
        return query_distances(x, [x.shape[1] - 1])[:, 0]
    out = []
    for p in positions:
        same = x[:, :p] == x[:, p : p + 1]
        out.append(p - same.int().argmax(1))
    return torch.stack(out, 1)


def retrieval_bundle(cfg: Mapping[str, Any], seed: int) -> DataBundle:
    check_retrieval(cfg)
    edges = resolved_edges(cfg)
    n_keys, n_values, n_distractors = cfg["num_keys"], cfg["num_values"], cfg["num_distractors"]
    args = (cfg["batch_size"], cfg["seq_len"], cfg["num_pairs"], n_keys, n_values, n_distractors, edges,
            cfg.get("num_queries", 1))  # fmt: skip

    def train(i: int) -> Batch:
        return retrieval_batch(np.random.default_rng([seed, i]), *args)

    val_rng = np.random.default_rng([seed, 2**32 - 1])  # a stream train() never draws from
    val = [retrieval_batch(val_rng, *args) for _ in range(cfg["val_batches"])]
    selection = synthetic_selection(cfg, lambda rng: retrieval_batch(rng, *args))
    info = {"source": "retrieval", "chance_accuracy": 1 / n_values, "distance_edges": edges}
    return DataBundle(train, val, selection, vocab_size(n_keys, n_values, n_distractors), None, info,
                      answers_only=True)  # fmt: skip
