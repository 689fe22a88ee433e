"""Turn a `data` config node into a `DataBundle`, tokenising text sources once into the memmap cache."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from numbers import Integral, Real
from pathlib import Path
from typing import Any

import numpy as np

from workbench.data import byte_tokenizer, cache
from workbench.data.bundle import DataBundle, HeldOut, corpus_bundle, held_out_setting
from workbench.data.documents import Document, content_hash, read_files, split
from workbench.data.mqar import mqar_bundle
from workbench.data.passkey import check_passkey_mix, mix_settings, passkey_bundle, with_passkey_rows
from workbench.data.retrieval import retrieval_bundle
from workbench.data.stdlib import stdlib_documents

SOURCES = ("stdlib", "text", "hf", "mqar", "passkey", "retrieval")


def build_data(cfg: Mapping[str, Any], seed: int) -> DataBundle:
    source = cfg["source"]
    if source == "mqar":
        return mqar_bundle(cfg, seed)
    if source == "passkey":
        return passkey_bundle(cfg, seed)
    if source == "retrieval":
        return retrieval_bundle(cfg, seed)
    if source not in SOURCES:
        raise ValueError(f"data.source: got {source!r}; allowed: {', '.join(SOURCES)}")
    check_passkey_mix(cfg)  # before any tokenising
    check_selection(cfg)
    if source == "stdlib":
        docs = stdlib_documents()
    elif source == "text":
        docs = read_files(Path(cfg["path"]).expanduser(), cfg["glob"])
    else:
        from workbench.data.hf import hf_documents

        docs = hf_documents(cfg)
    return with_passkey_rows(_text_bundle(cfg, seed, docs), *mix_settings(cfg), seed)


def _text_bundle(cfg: Mapping[str, Any], seed: int, docs: Sequence[Document]) -> DataBundle:
    if cfg["source"] == "hf":
        from workbench.data.hf import LocalTokenizer

        tok = LocalTokenizer(cfg["tokenizer"], cfg.get("eos_token"))
        encode = lambda part: tok.encode([d.data.decode("utf-8", errors="replace") for d in part])  # noqa: E731
        tok_id, vocab, token_bytes, separator = tok.fingerprint, tok.vocab_size, None, tok.eos_id
    else:
        encode = lambda part: [byte_tokenizer.encode(d.data) for d in part]  # noqa: E731
        tok_id, vocab, token_bytes = byte_tokenizer.NAME, byte_tokenizer.VOCAB_SIZE, byte_tokenizer.token_bytes()
        separator = byte_tokenizer.EOS
    val_fraction, selection_fraction = cfg["val_fraction"], held_out_setting(cfg, "selection_fraction", "val_fraction")
    digest = content_hash(docs)
    key = cache.cache_key(digest, tok_id, val_fraction, selection_fraction)
    folder = Path(cfg["cache_dir"]).expanduser() / key
    train_docs, val_docs, selection_docs = split(docs, val_fraction, selection_fraction)

    def held_out(name: str, part: list[Document], budget: int) -> HeldOut:
        return HeldOut(*cache.load_or_build_documents(folder / f"{name}.bin", lambda: encode(part)), budget)

    train = cache.load_or_build(folder / "train.bin", lambda: np.concatenate(encode(train_docs)))
    val = held_out("val", val_docs, cfg["val_tokens"])
    selection = held_out("selection", selection_docs, held_out_setting(cfg, "selection_tokens", "val_tokens"))
    info = {"source": cfg["source"], "content_hash": digest, "cache_key": key, "tokenizer": tok_id,
            "documents": len(docs), "val_documents": len(val_docs), "val_bytes": sum(len(d.data) for d in val_docs),
            "selection_fraction": selection_fraction, "selection_documents": len(selection_docs),
            "selection_bytes": sum(len(d.data) for d in selection_docs)}  # fmt: skip
    return corpus_bundle(
        train, val, selection, seq_len=cfg["seq_len"], batch_size=cfg["batch_size"], seed=seed, vocab_size=vocab,
        token_bytes=token_bytes, info=info, document_separator=separator,
    )  # fmt: skip


def check_selection(cfg: Mapping[str, Any]) -> None:
    """A text source's selection settings, checked before any document is read."""
    val_fraction, fraction = cfg["val_fraction"], held_out_setting(cfg, "selection_fraction", "val_fraction")
    if isinstance(fraction, bool) or not isinstance(fraction, Real) or not 0 < fraction < 1 - val_fraction:
        raise ValueError(
            f"data.selection_fraction: got {fraction!r} (unset or null: data.val_fraction); allowed: a number in "
            f"(0, 1 - data.val_fraction) = (0, {1 - val_fraction:g}), so that train keeps documents"
        )
    budget = held_out_setting(cfg, "selection_tokens", "val_tokens")
    if isinstance(budget, bool) or not isinstance(budget, Integral) or budget < 1:
        raise ValueError(f"data.selection_tokens: got {budget!r}; allowed: an integer >= 1 (unset or null: "
                         "data.val_tokens)")  # fmt: skip
