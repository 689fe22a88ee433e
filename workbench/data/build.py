"""Turn a `data` config node into a `DataBundle`, tokenising text sources once into the memmap cache."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from workbench.data import byte_tokenizer, cache
from workbench.data.bundle import DataBundle, corpus_bundle
from workbench.data.documents import Document, content_hash, read_files, split
from workbench.data.mqar import mqar_bundle
from workbench.data.passkey import check_passkey_mix, mix_settings, passkey_bundle, with_passkey_rows
from workbench.data.stdlib import stdlib_documents

SOURCES = ("stdlib", "text", "hf", "mqar", "passkey")


def build_data(cfg: Mapping[str, Any], seed: int) -> DataBundle:
    source = cfg["source"]
    if source == "mqar":
        return mqar_bundle(cfg, seed)
    if source == "passkey":
        return passkey_bundle(cfg, seed)
    if source not in SOURCES:
        raise ValueError(f"data.source: got {source!r}; allowed: {', '.join(SOURCES)}")
    check_passkey_mix(cfg)  # before any tokenising
    if source == "stdlib":
        docs = stdlib_documents()
    elif source == "text":
        docs = read_files(Path(cfg["path"]).expanduser(), cfg["glob"])
    else:
        from workbench.data.hf import hf_documents

        docs = hf_documents(cfg)
    return with_passkey_rows(_text_bundle(cfg, seed, docs), *mix_settings(cfg), seed)


def _text_bundle(cfg: Mapping[str, Any], seed: int, docs: list[Document]) -> DataBundle:
    if cfg["source"] == "hf":
        from workbench.data.hf import LocalTokenizer

        tok = LocalTokenizer(cfg["tokenizer"], cfg.get("eos_token"))
        encode = lambda part: tok.encode([d.data.decode("utf-8", errors="replace") for d in part])  # noqa: E731
        tok_id, vocab, token_bytes = tok.fingerprint, tok.vocab_size, None
    else:
        encode = lambda part: [byte_tokenizer.encode(d.data) for d in part]  # noqa: E731
        tok_id, vocab, token_bytes = byte_tokenizer.NAME, byte_tokenizer.VOCAB_SIZE, byte_tokenizer.token_bytes()
    digest = content_hash(docs)
    key = cache.cache_key(digest, tok_id, cfg["val_fraction"])
    folder = Path(cfg["cache_dir"]).expanduser() / key
    train_docs, val_docs = split(docs, cfg["val_fraction"])

    def tokens(part: list[Document]) -> np.ndarray:
        return np.concatenate(encode(part))

    train = cache.load_or_build(folder / "train.bin", lambda: tokens(train_docs))
    val = cache.load_or_build(folder / "val.bin", lambda: tokens(val_docs))
    info = {"source": cfg["source"], "content_hash": digest, "cache_key": key, "tokenizer": tok_id,
            "documents": len(docs), "val_documents": len(val_docs),
            "val_bytes": sum(len(d.data) for d in val_docs)}  # fmt: skip
    return corpus_bundle(
        train, val, seq_len=cfg["seq_len"], batch_size=cfg["batch_size"], val_budget=cfg["val_tokens"], seed=seed,
        vocab_size=vocab, token_bytes=token_bytes, info=info,
    )  # fmt: skip
