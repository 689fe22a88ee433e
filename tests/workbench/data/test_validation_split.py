"""Held-out splits: val windows drawn across every val document with a seed fixed apart from the run's, a selection
split disjoint from train and val.

The corpus's document k is one byte value repeated, so every token names its document: the tests count documents
from the tokens themselves, independently of the split and window code.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from workbench.data import build_data
from workbench.data.bundle import Batch
from workbench.data.byte_tokenizer import EOS

N_DOCS, SEQ, BATCH = 40, 16, 4
LENGTHS = np.random.default_rng(0).integers(50, 2000, N_DOCS)  # bytes of document k, whose byte value is 100 + k


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("corpus")
    for k, n in enumerate(LENGTHS):
        (root / f"doc{k:02d}.txt").write_bytes(bytes([100 + k]) * int(n))
    return dict(source="text", path=str(root), glob="*.txt", cache_dir=str(tmp_path_factory.mktemp("cache")),
                seq_len=SEQ, batch_size=BATCH, val_fraction=0.25, val_tokens=256)  # fmt: skip


def _target_docs(batches: list[Batch]) -> np.ndarray:
    """The document of every scored target: its byte, or for an EOS target the byte before it (same document)."""
    x = torch.cat([b[0] for b in batches]).flatten().numpy()
    y = torch.cat([b[1] for b in batches]).flatten().numpy()
    return np.where(y == EOS, x, y) - 100


def _same(a: list[Batch], b: list[Batch]) -> bool:
    return len(a) == len(b) and all(torch.equal(u, v) for p, q in zip(a, b) for u, v in zip(p, q))  # noqa: B905


def _docs_in(cfg: dict, info: dict, split: str) -> set[int]:
    """Documents in a split's whole cached stream."""
    stream = np.memmap(Path(cfg["cache_dir"]) / info["cache_key"] / f"{split}.bin", dtype=np.uint16, mode="r")
    return {int(t) - 100 for t in np.unique(stream) if t != EOS}


def test_val_windows_span_many_documents_and_the_info_counts_them(corpus):
    bundle = build_data(corpus, seed=0)
    info = bundle.info
    docs = _target_docs(bundle.val)
    assert len(docs) == info["val_budget_tokens"] == corpus["val_tokens"] < info["val_tokens"]  # a sample
    assert info["val_documents_scored"] == len(set(docs.tolist())) > 1
    assert info["val_documents"] == len(_docs_in(corpus, info, "val")) >= info["val_documents_scored"]


def test_each_val_document_gets_its_share_of_the_budget(corpus):
    """Stratified windows: every document's scored targets are its length's share of the budget to within two windows
    (i.i.d. windows almost always miss that: a long document's count of them has a standard deviation of ~4 here)."""
    bundle = build_data({**corpus, "val_tokens": 2048}, seed=0)
    docs = _target_docs(bundle.val)
    for k in _docs_in(corpus, bundle.info, "val"):
        expected = (LENGTHS[k] + 1) * len(docs) / bundle.info["val_tokens"]
        assert abs(int((docs == k).sum()) - expected) <= 2 * SEQ, k


def test_a_budget_covering_the_split_scores_every_whole_window(corpus):
    bundle = build_data({**corpus, "val_tokens": 10**9}, seed=0)
    info = bundle.info
    assert info["val_budget_tokens"] == (info["val_tokens"] - 1) // SEQ * SEQ
    assert info["val_documents_scored"] == info["val_documents"] == len(set(_target_docs(bundle.val).tolist()))


def test_held_out_batches_are_the_same_for_every_run_seed(corpus):
    a, b = build_data(corpus, seed=0), build_data(corpus, seed=1)
    assert _same(a.val, b.val) and _same(a.selection, b.selection)
    assert not torch.equal(a.train(0)[0], b.train(0)[0])


def test_selection_documents_are_disjoint_from_train_and_val(corpus):
    bundle = build_data(corpus, seed=0)
    train, val, selection = (_docs_in(corpus, bundle.info, s) for s in ("train", "val", "selection"))
    assert selection and val and train
    assert not selection & train and not selection & val and not val & train
    assert train | val | selection == set(range(N_DOCS))  # nothing lost
    assert bundle.info["selection_documents"] == len(selection)
    scored = set(_target_docs(bundle.selection).tolist())
    assert scored <= selection and bundle.info["selection_documents_scored"] == len(scored) > 1


def test_selection_budget_defaults_to_the_val_budget_and_can_be_set(corpus):
    default, sized = build_data(corpus, seed=0), build_data({**corpus, "selection_tokens": 128}, seed=0)
    assert default.info["selection_budget_tokens"] == default.info["val_budget_tokens"] == 256
    assert sum(y.numel() for _, y in sized.selection) == sized.info["selection_budget_tokens"] == 128
    assert _same(default.val, sized.val)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [({"selection_fraction": 0.8}, r"data\.selection_fraction: got 0\.8 .*\(0, 0\.75\)"),
     ({"val_fraction": 0.6}, r"data\.selection_fraction: got 0\.6 \(unset or null: data\.val_fraction\)"),
     ({"selection_tokens": 0}, r"data\.selection_tokens: got 0; allowed: an integer >= 1")],
)  # fmt: skip
def test_bad_selection_settings_fail_before_any_document_is_read(corpus, overrides, message):
    with pytest.raises(ValueError, match=message):
        build_data({**corpus, "path": "/no/such/folder", **overrides}, seed=0)


@pytest.mark.parametrize(
    "cfg",
    [dict(source="mqar", batch_size=8, num_pairs=4, num_queries=6, num_keys=16, num_values=16, val_batches=2),
     dict(source="passkey", batch_size=4, seq_len=64, distance=20, num_digits=3, val_batches=2)],
)  # fmt: skip
def test_synthetic_sources_have_a_fixed_selection_split(cfg):
    a, b = build_data(cfg, seed=0), build_data(cfg, seed=1)
    assert len(a.selection) == len(a.val) == 2 and len(build_data({**cfg, "selection_batches": 3}, 0).selection) == 3
    assert _same(a.selection, b.selection)  # every seed: the same
    assert not any(torch.equal(s[0], v[0]) for s in a.selection for v in a.val)
    assert not any(torch.equal(s[0], a.train(i)[0]) for s in a.selection for i in range(20))
