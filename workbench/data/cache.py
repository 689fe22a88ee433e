"""Token arrays cached as uint16 memmaps, with a sidecar holding length and checksum so damage is never used."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np


def cache_key(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:24]


def _checksum(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def _sidecar(path: Path) -> Path:
    return path.with_suffix(".json")


def _meta(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(_sidecar(path).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def is_valid(path: Path, with_doc_lengths: bool = False) -> bool:
    """True when the file exists and matches the length and checksum recorded when it was written (and, when asked,
    the sidecar holds document lengths that add up to that length)."""
    info = _meta(path)
    if info is None or not path.exists():
        return False
    length = info.get("length", -1)
    if with_doc_lengths and sum(info.get("doc_lengths", [-1])) != length:
        return False
    return path.stat().st_size == 2 * length and _checksum(path) == info.get("sha256")


def write(path: Path, tokens: np.ndarray, doc_lengths: list[int] | None = None) -> None:
    """Write tokens then the sidecar, each via a temp file and `os.replace`, so a crash leaves no valid-looking file."""
    if tokens.size and int(tokens.max()) > np.iinfo(np.uint16).max:
        raise ValueError(f"token ids up to {int(tokens.max())} do not fit the uint16 cache")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")  # concurrent runs may share the cache
    tokens.astype(np.uint16).tofile(tmp)
    os.replace(tmp, path)
    meta_tmp = path.with_name(f"{path.name}.{os.getpid()}.json.tmp")
    meta = {"length": int(tokens.size), "sha256": _checksum(path)}
    if doc_lengths is not None:
        meta["doc_lengths"] = doc_lengths
    meta_tmp.write_text(json.dumps(meta))
    os.replace(meta_tmp, _sidecar(path))


def load_or_build(path: Path, build: Callable[[], np.ndarray]) -> np.ndarray:
    """The cached memmap at `path`, rebuilt first when missing, truncated or corrupt."""
    if not is_valid(path):
        write(path, build())
    return np.memmap(path, dtype=np.uint16, mode="r")


def load_or_build_documents(path: Path, build: Callable[[], list[np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """A held-out split's cached stream and its documents' token lengths in stream order. The lengths live in the
    sidecar, so counting the documents that scored windows touch needs no re-tokenising on a cache hit."""
    info = _meta(path) if is_valid(path, with_doc_lengths=True) else None
    if info is None:
        parts = build()
        lengths = [len(p) for p in parts]
        write(path, np.concatenate(parts), lengths)
    else:
        lengths = info["doc_lengths"]
    return np.memmap(path, dtype=np.uint16, mode="r"), np.asarray(lengths, dtype=np.int64)
