"""One test per data source: stdlib, local text, a Hugging Face dataset on disk, MQAR and passkey."""

import numpy as np
import pytest
import torch

from workbench.data import build_data
from workbench.data.bundle import IGNORE
from workbench.data.byte_tokenizer import EOS, SPECIALS

TEXT = dict(seq_len=32, batch_size=4, val_fraction=0.2, val_tokens=64)


def _check_corpus(bundle, seq_len=32, batch_size=4):
    x, y = bundle.train(0)
    assert x.shape == y.shape == (batch_size, seq_len) and x.dtype == torch.int64
    assert torch.equal(x[:, 1:], y[:, :-1])
    assert torch.equal(bundle.train(5)[0], bundle.train(5)[0]) and not torch.equal(bundle.train(5)[0], x)
    assert sum(v[0].numel() for v in bundle.val) == bundle.info["val_budget_tokens"]
    assert sum(v[0].numel() for v in bundle.selection) == bundle.info["selection_budget_tokens"] > 0


def test_stdlib_source(tmp_path):
    cfg = {**TEXT, "source": "stdlib", "cache_dir": str(tmp_path), "val_fraction": 0.02, "val_tokens": 4096}
    bundle = build_data(cfg, seed=0)
    _check_corpus(bundle)
    info = bundle.info
    assert info["documents"] > 500 and info["train_tokens"] > 5_000_000
    assert 1 < info["val_documents_scored"] <= info["val_documents"] and info["selection_documents"] > 1
    assert len(bundle.info["content_hash"]) == 64 and bundle.vocab_size == 264


def test_text_source_folder_splits_by_file(tmp_path):
    for i in range(20):
        (tmp_path / "docs" / f"d{i}").mkdir(parents=True)
        (tmp_path / "docs" / f"d{i}" / "a.txt").write_text(f"document {i} " * 30)
    bundle = build_data(dict(source="text", path=str(tmp_path / "docs"), glob="*.txt", cache_dir=str(tmp_path / "c"),
                             **TEXT), seed=0)  # fmt: skip
    _check_corpus(bundle)
    assert 0 < bundle.info["val_documents"] < 20
    stream = np.concatenate([x.flatten().numpy() for x, _ in bundle.val])
    assert EOS in stream or stream.max() < 256


def test_hf_source_from_disk_with_local_tokenizer(tmp_path):
    datasets = pytest.importorskip("datasets")
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    rows = [f"the quick brown fox {i} jumps over the lazy dog" for i in range(200)]
    datasets.Dataset.from_dict({"text": rows}).save_to_disk(str(tmp_path / "ds"))
    tok = Tokenizer(models.BPE(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(rows, trainers.BpeTrainer(vocab_size=100, special_tokens=["[UNK]", "[EOS]"]))
    tok.save(str(tmp_path / "tokenizer.json"))
    cfg = dict(source="hf", name=str(tmp_path / "ds"), subset=None, split="train", text_field="text",
               tokenizer=str(tmp_path / "tokenizer.json"), eos_token="[EOS]", cache_dir=str(tmp_path / "c"),
               **TEXT)  # fmt: skip
    bundle = build_data(cfg, seed=0)
    _check_corpus(bundle)
    assert bundle.vocab_size == tok.get_vocab_size() and bundle.token_bytes is None
    assert int(bundle.train(0)[0].max()) < bundle.vocab_size


def test_mqar_targets_are_the_values_of_queried_keys():
    cfg = dict(source="mqar", batch_size=8, num_pairs=4, num_queries=6, num_keys=16, num_values=16, val_batches=2)
    bundle = build_data(cfg, seed=1)
    x, y = bundle.train(3)
    assert x.shape == (8, 2 * (4 + 6) - 1) and len(bundle.val) == 2
    for row_x, row_y in zip(x.tolist(), y.tolist(), strict=True):
        pairs = dict(zip(row_x[0:8:2], row_x[1:8:2], strict=True))
        answered = [(t, row_x[i]) for i, t in enumerate(row_y) if t != IGNORE]
        assert len(answered) == 6 and all(pairs[k] == v for v, k in answered)


@pytest.mark.parametrize("distance", [5, 40])
def test_passkey_distance_between_key_and_query(distance):
    cfg = dict(source="passkey", batch_size=4, seq_len=64, distance=distance, num_digits=3, val_batches=1)
    x, y = build_data(cfg, seed=0).train(0)
    for row_x, row_y in zip(x.tolist(), y.tolist(), strict=True):
        k, q = row_x.index(SPECIALS["key"]), row_x.index(SPECIALS["query"])
        assert q - (k + 1 + 3) == distance
        assert [t for t in row_y if t != IGNORE] == row_x[k + 1 : k + 4]


def test_passkey_distance_too_long_is_rejected():
    with pytest.raises(ValueError, match=r"data\.distance"):
        build_data(dict(source="passkey", batch_size=1, seq_len=16, distance=20, num_digits=3, val_batches=1), 0)
