"""Token arrays cached as uint16 memmaps, with a sidecar holding length and checksum so damage is never used."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

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


def is_valid(path: Path) -> bool:
    """True when the file exists and matches the length and checksum recorded when it was written."""
    meta = _sidecar(path)
    if not (path.exists() and meta.exists()):
        return False
    try:
        info = json.loads(meta.read_text())
    except json.JSONDecodeError:
        return False
    return path.stat().st_size == 2 * info.get("length", -1) and _checksum(path) == info.get("sha256")


def write(path: Path, tokens: np.ndarray) -> None:
    """Write tokens then the sidecar, each via a temp file and `os.replace`, so a crash leaves no valid-looking file."""
    if tokens.size and int(tokens.max()) > np.iinfo(np.uint16).max:
        raise ValueError(f"token ids up to {int(tokens.max())} do not fit the uint16 cache")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")  # concurrent runs may share the cache
    tokens.astype(np.uint16).tofile(tmp)
    os.replace(tmp, path)
    meta_tmp = path.with_name(f"{path.name}.{os.getpid()}.json.tmp")
    meta_tmp.write_text(json.dumps({"length": int(tokens.size), "sha256": _checksum(path)}))
    os.replace(meta_tmp, _sidecar(path))


def load_or_build(path: Path, build: Callable[[], np.ndarray]) -> np.ndarray:
    """The cached memmap at `path`, rebuilt first when missing, truncated or corrupt."""
    if not is_valid(path):
        write(path, build())
    return np.memmap(path, dtype=np.uint16, mode="r")
