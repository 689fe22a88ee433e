"""A Hugging Face dataset (hub name or `save_to_disk` folder) tokenised by a tokenizer loaded from a local path."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from workbench.data.documents import Document


class LocalTokenizer:
    """A `tokenizers` file (tokenizer.json) or a `transformers` tokenizer folder; never fetched from the network.
    `backend` is the `tokenizers.Tokenizer` that encodes the documents (an evaluation wraps the same one)."""

    def __init__(self, path: str, eos_token: str | None) -> None:
        p = Path(path)
        if p.is_file():
            from tokenizers import Tokenizer

            self.backend = Tokenizer.from_file(str(p))
            self.fingerprint = hashlib.sha256(p.read_bytes()).hexdigest()
        elif p.is_dir():
            from transformers import AutoTokenizer

            self.backend = AutoTokenizer.from_pretrained(str(p), local_files_only=True).backend_tokenizer
            self.fingerprint = hashlib.sha256(self.backend.to_str().encode()).hexdigest()
        else:
            raise FileNotFoundError(f"data.tokenizer: {path} is neither a tokenizer.json file nor a folder")
        self.vocab_size = self.backend.get_vocab_size()
        self.eos_id = None if eos_token is None else self.backend.token_to_id(eos_token)
        if eos_token is not None and self.eos_id is None:
            raise ValueError(f"data.eos_token: got {eos_token!r}, which is not in the tokenizer's vocabulary; allowed: "
                             f"null or a token of data.tokenizer={path!r}")  # fmt: skip

    def encode(self, texts: list[str]) -> list[np.ndarray]:
        tail = [] if self.eos_id is None else [self.eos_id]
        return [np.asarray(e.ids + tail, dtype=np.uint16) for e in self.backend.encode_batch(texts)]


def hf_documents(cfg: Mapping[str, Any]) -> list[Document]:
    """Rows of `cfg.split` as documents named by row index (the split is made by hashing these names)."""
    ds = open_split(cfg)
    return [Document(f"row{i}", text.encode()) for i, text in enumerate(ds[cfg["text_field"]])]


def open_split(cfg: Mapping[str, Any]) -> Any:
    """The dataset's `cfg.split` (a `save_to_disk` folder is memory-mapped, not read), its `text_field` checked."""
    import datasets

    name = cfg["name"]
    ds = datasets.load_from_disk(name) if Path(name).exists() else datasets.load_dataset(name, cfg.get("subset"))
    if isinstance(ds, datasets.DatasetDict):
        check_split(cfg, list(ds))
        ds = ds[cfg["split"]]
    check_text_field(cfg, ds.column_names)
    return ds


def check_split(cfg: Mapping[str, Any], splits: list[str]) -> None:
    if cfg["split"] not in splits:
        raise ValueError(f"data.split: got {cfg['split']!r}; allowed: {', '.join(splits)}")


def check_text_field(cfg: Mapping[str, Any], columns: list[str]) -> None:
    if cfg["text_field"] not in columns:
        raise ValueError(f"data.text_field: got {cfg['text_field']!r}; allowed: {', '.join(columns)}")
