"""The token cache: a changed source or split rebuilds; a truncated or corrupted file is detected and rebuilt."""

import numpy as np

from workbench.data import build_data
from workbench.data.byte_tokenizer import EOS
from workbench.data.cache import is_valid, load_or_build, load_or_build_documents, write


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


def test_changed_selection_fraction_rebuilds_and_one_file_splits_into_three_tails(tmp_path):
    data = bytes(range(256)) * 8
    (tmp_path / "src.txt").write_bytes(data)
    default = build_data(_cfg(tmp_path), 0)  # selection_fraction unset: data.val_fraction, 0.1
    wider = build_data({**_cfg(tmp_path), "selection_fraction": 0.2}, 0)
    assert default.info["cache_key"] != wider.info["cache_key"]
    for bundle, selection_fraction in ((default, 0.1), (wider, 0.2)):
        folder = tmp_path / "cache" / bundle.info["cache_key"]
        parts = {s: np.fromfile(folder / f"{s}.bin", dtype=np.uint16) for s in ("train", "selection", "val")}
        assert all(p[-1] == EOS for p in parts.values())  # each part is one document
        val_cut, sel_cut = int(len(data) * 0.9), int(len(data) * (0.9 - selection_fraction))
        assert bytes(parts["val"][:-1].astype(np.uint8)) == data[val_cut:]  # val: the tail, whatever selection is
        assert bytes(parts["selection"][:-1].astype(np.uint8)) == data[sel_cut:val_cut]
        assert bytes(parts["train"][:-1].astype(np.uint8)) == data[:sel_cut]


def test_a_held_out_stream_without_consistent_document_lengths_is_rebuilt(tmp_path):
    path, parts = tmp_path / "val.bin", [np.arange(5, dtype=np.uint16), np.arange(3, dtype=np.uint16)]
    calls = []

    def build():
        calls.append(1)
        return parts

    write(path, np.concatenate(parts))  # as a plain stream: no document lengths in the sidecar
    tokens, lengths = load_or_build_documents(path, build)
    assert np.array_equal(tokens, np.concatenate(parts)) and lengths.tolist() == [5, 3] and len(calls) == 1
    assert load_or_build_documents(path, build)[1].tolist() == [5, 3] and len(calls) == 1  # cached
    write(path, np.concatenate(parts), [5, 2])  # lengths that do not add up to the stream
    assert load_or_build_documents(path, build)[1].tolist() == [5, 3] and len(calls) == 2


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
