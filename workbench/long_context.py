"""How a model uses a long context: loss by position bucket, passkey retrieval vs distance, retrieval by content.

Two measurements, as in the context-extension papers (position interpolation, YaRN):
- loss by position bucket: mean next-token loss at `context` tokens per sequence, in equal buckets of positions; a
  model that extends well keeps (or lowers) its loss past its pre-training context.
- passkey retrieval vs distance: `workbench.data.passkey`'s task (fixed seed per distance), greedy accuracy of the
  key's digits after the query, each digit predicted from the true prefix (teacher forcing), and the fraction of
  sequences with every digit right.
Training runs write both into results.json["long_context"] when `long_context.buckets` > 0; `analysis.long_context`
is the command line and reads them back. A third, for models trained on `data=retrieval`: retrieval by content vs
distance (`accuracy_by_distance`), greedy accuracy of the queried key's value on the validation rows per distance
bucket; every such run writes it into results.json["retrieval"].
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from itertools import pairwise
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from workbench.data import build_data
from workbench.data.bundle import IGNORE, Batch
from workbench.data.byte_tokenizer import VOCAB_SIZE
from workbench.data.passkey import passkey_batch
from workbench.data.retrieval import bucket_labels, query_distances

PASSKEY_SEED = 0  # every model sees the same passkey sequences at a given distance


def check_buckets(buckets: int, context: int, names: Mapping[str, str] | None = None) -> None:
    if not isinstance(buckets, int) or not 1 <= buckets <= context:
        name = (names or {}).get("buckets", "buckets")
        raise ValueError(f"{name}: got {buckets!r}; allowed: an integer from 1 to the context, {context}")


def check_passkey(
    distances: Sequence[int], context: int, samples: int, n_digits: int, vocab_size: int,
    names: Mapping[str, str] | None = None,
) -> None:  # fmt: skip
    """Every passkey setting, before any forward pass: the key block must fit `context` at each distance."""
    names = names or {}
    if vocab_size < VOCAB_SIZE:
        raise ValueError(f"model.vocab_size: got {vocab_size}; allowed: >= {VOCAB_SIZE}, the passkey task's byte ids")
    for arg, value in (("samples", samples), ("n_digits", n_digits)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{names.get(arg, arg)}: got {value!r}; allowed: an integer >= 1")
    longest = context - 1 - 2 * n_digits
    bad = [d for d in distances if not isinstance(d, int) or not 0 <= d <= longest]
    if bad and longest < 0:  # no distance fits: the context or the digits are what must change
        raise ValueError(f"{names.get('distances', 'distances')}: got {bad}; allowed: none at context {context} with "
                         f"{n_digits} digits (a passkey needs a context of at least 2 x digits + 1 = "
                         f"{2 * n_digits + 1} tokens: raise the context or lower "
                         f"{names.get('n_digits', 'n_digits')})")  # fmt: skip
    if bad:
        raise ValueError(f"{names.get('distances', 'distances')}: got {bad}; allowed: 0..{longest} for context "
                         f"{context}, {n_digits} digits")  # fmt: skip


def _device(model: torch.nn.Module) -> torch.device:
    return next(iter(model.parameters()), torch.empty(0)).device


@torch.no_grad()
def position_bucket_loss(model: torch.nn.Module, batches: Iterable[Batch], buckets: int) -> pd.DataFrame:
    """Mean next-token loss (nats) over positions [start, end) of each of `buckets` equal slices of the sequence."""
    nats: torch.Tensor | None = None
    device = _device(model)
    for x, y in batches:
        check_buckets(buckets, x.shape[1])
        x, y = x.to(device), y.to(device)
        losses = F.cross_entropy(model(x).float().transpose(1, 2), y, ignore_index=IGNORE, reduction="none")
        per_position = torch.stack([losses.sum(0), (y != IGNORE).sum(0).float()]).double().cpu()
        nats = per_position if nats is None else nats + per_position
    if nats is None:
        raise ValueError("batches: got none; allowed: at least one (inputs, targets) batch")
    edges = np.linspace(0, nats.shape[1], buckets + 1).round().astype(int)
    rows = []
    for i, (start, end) in enumerate(pairwise(edges)):
        total, tokens = nats[:, start:end].sum(1).tolist()
        rows.append({"bucket": i, "start": int(start), "end": int(end), "loss": total / max(tokens, 1),
                     "tokens": int(tokens)})  # fmt: skip
    return pd.DataFrame(rows)


@torch.no_grad()
def passkey_accuracy(
    model: torch.nn.Module,
    distances: Sequence[int],
    context: int,
    samples: int = 64,
    n_digits: int = 5,
    batch_size: int = 16,
    seed: int = PASSKEY_SEED,
) -> pd.DataFrame:
    """Per distance: digit accuracy and exact match of the passkey over `samples` sequences of `context` tokens."""
    check_passkey(distances, context, samples, n_digits, model.cfg.vocab_size)
    device = _device(model)
    rows = []
    for distance in distances:
        rng = np.random.default_rng([seed, distance])
        correct, exact = 0, 0
        for start in range(0, samples, batch_size):
            x, y = passkey_batch(rng, min(batch_size, samples - start), context, distance, n_digits)
            hit = model(x.to(device)).argmax(-1).cpu() == y
            answer = y != IGNORE
            correct += (hit & answer).sum().item()
            exact += (hit | ~answer).all(1).sum().item()
        rows.append({"distance": distance, "digit_accuracy": correct / (samples * n_digits),
                     "exact_match": exact / samples, "samples": samples})  # fmt: skip
    return pd.DataFrame(rows)


@torch.no_grad()
def accuracy_by_distance(model: torch.nn.Module, batches: Iterable[Batch], edges: Sequence[int]) -> dict[str, Any]:
    """Greedy accuracy of `workbench.data.retrieval` rows' answers (every query of a row) per distance bucket
    [edges[i], edges[i + 1]), labelled `lo-hi` (both included): results.json["retrieval"]. A bucket no query fell in
    has accuracy None; a query farther than the last edge (num_queries > 1) is in no bucket."""
    device = _device(model)
    correct, counts = np.zeros(len(edges) - 1, dtype=np.int64), np.zeros(len(edges) - 1, dtype=np.int64)
    was_training = model.training
    model.eval()
    try:
        for x, y in batches:
            cols = (y != IGNORE).any(0).nonzero().flatten()
            hit = (model(x.to(device))[:, cols].argmax(-1).cpu() == y[:, cols]).numpy().ravel()
            distance = query_distances(x, cols.tolist()).numpy().ravel()
            bucket = np.searchsorted(edges, distance, side="right") - 1
            inside = (bucket >= 0) & (bucket < len(counts))
            np.add.at(counts, bucket[inside], 1)
            np.add.at(correct, bucket[inside], hit[inside])
    finally:
        model.train(was_training)
    labels = bucket_labels(edges)
    return {"accuracy_by_distance": {k: (int(c) / int(n) if n else None) for k, c, n in zip(labels, correct, counts,
                                                                                           strict=True)},
            "counts": {k: int(n) for k, n in zip(labels, counts, strict=True)},
            "distance_edges": [int(e) for e in edges]}  # fmt: skip


def val_batches(data_cfg: Mapping[str, Any], context: int, seed: int = 0) -> list[Batch]:
    """The fixed val batches of a run's data config (its `data` node) at `context` tokens per sequence."""
    return build_data({**data_cfg, "seq_len": context}, seed).val


def evaluate(
    model: torch.nn.Module,
    batches: Iterable[Batch],
    buckets: int,
    distances: Sequence[int],
    samples: int = 64,
    n_digits: int = 5,
) -> dict[str, Any]:
    """Both measurements as plain records (results.json["long_context"]); the context is that of `batches`."""
    batches = list(batches)
    context = batches[0][0].shape[1] if batches else 0
    was_training = model.training
    model.eval()
    try:
        out = {"context": context, "position_buckets": position_bucket_loss(model, batches, buckets).to_dict("records")}
        passkey = passkey_accuracy(model, distances, context, samples, n_digits) if distances else pd.DataFrame()
        out["passkey"] = passkey.to_dict("records")
    finally:
        model.train(was_training)
    return out
