"""The token cache: a changed source rebuilds; a truncated or corrupted file is detected and rebuilt."""

import numpy as np

from workbench.data import build_data
from workbench.data.cache import is_valid, load_or_build


def _cfg(tmp_path):
    return dict(source="text", path=str(tmp_path / "src.txt"), glob="*.txt", cache_dir=str(tmp_path / "cache"),
                seq_len=16, batch_size=2, val_fraction=0.1, val_tokens=32)  # fmt: skip


def test_changed_source_rebuilds(tmp_path):
    (tmp_path / "src.txt").write_text("abc " * 500)
    first = build_data(_cfg(tmp_path), 0)
    (tmp_path / "src.txt").write_text("xyz " * 500)
    second = build_data(_cfg(tmp_path), 0)
    assert first.info["cache_key"] != second.info["cache_key"]
    assert set(second.train(0)[0].flatten().tolist()) <= set(b"xyz ")


def test_truncated_or_corrupt_cache_is_rebuilt(tmp_path):
    path = tmp_path / "t.bin"
    tokens = np.arange(1000, dtype=np.uint16)
    calls = []

    def build():
        calls.append(1)
        return tokens

    load_or_build(path, build)
    assert np.array_equal(load_or_build(path, build), tokens) and len(calls) == 1  # cached
    path.write_bytes(path.read_bytes()[:-10])  # truncated
    assert not is_valid(path)
    assert np.array_equal(load_or_build(path, build), tokens) and len(calls) == 2
    data = bytearray(path.read_bytes())
    data[100] ^= 0xFF  # same length, flipped bits
    path.write_bytes(bytes(data))
    assert not is_valid(path)
    assert np.array_equal(load_or_build(path, build), tokens) and len(calls) == 3


def test_truncated_corpus_cache_is_rebuilt_end_to_end(tmp_path):
    (tmp_path / "src.txt").write_text("hello world " * 300)
    first = build_data(_cfg(tmp_path), 0)
    train_bin = tmp_path / "cache" / first.info["cache_key"] / "train.bin"
    train_bin.write_bytes(train_bin.read_bytes()[: 2 * 100])
    second = build_data(_cfg(tmp_path), 0)
    assert second.info["train_tokens"] == first.info["train_tokens"]
