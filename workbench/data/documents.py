"""Documents read from local text files, split train/val deterministically by a hash of each name."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Document:
    name: str  # relative path, or a row id
    data: bytes


def is_val(name: str, val_fraction: float) -> bool:
    """Stable across machines and runs: the first 8 hex digits of sha1(name) as a fraction."""
    return int(hashlib.sha1(name.encode()).hexdigest()[:8], 16) / 16**8 < val_fraction


def split(docs: list[Document], val_fraction: float) -> tuple[list[Document], list[Document]]:
    train = [d for d in docs if not is_val(d.name, val_fraction)]
    val = [d for d in docs if is_val(d.name, val_fraction)]
    if len(docs) == 1 or not train or not val:  # one file (or an unlucky split): hold out its tail instead
        joined = b"".join(d.data for d in docs)
        cut = int(len(joined) * (1 - val_fraction))
        return [Document("train", joined[:cut])], [Document("val", joined[cut:])]
    return train, val


def list_files(path: Path, pattern: str, exclude: frozenset[str] = frozenset()) -> list[Path]:
    """A file, or every file under a folder matching `pattern` (sorted) whose relative path avoids `exclude` parts."""
    if not path.exists():
        raise FileNotFoundError(f"data.path: got {str(path)!r}, which does not exist; allowed: a text file or a folder")
    if path.is_file():
        return [path]
    files = sorted(p for p in path.rglob(pattern) if p.is_file() and not exclude & set(p.relative_to(path).parts))
    if not files:
        raise FileNotFoundError(
            f"data.path: got {str(path)!r}, a folder with no files matching data.glob={pattern!r}; "
            "allowed: a text file or a folder holding such files"
        )
    return files


def read_files(path: Path, pattern: str, exclude: frozenset[str] = frozenset()) -> list[Document]:
    """The documents `list_files` finds, named by their path relative to `path` (a single file: its name)."""
    return [Document(p.relative_to(path).as_posix() if p != path else p.name, p.read_bytes())
            for p in list_files(path, pattern, exclude)]  # fmt: skip


def content_hash(docs: list[Document]) -> str:
    h = hashlib.sha256()
    for d in docs:
        h.update(d.name.encode() + b"\0" + hashlib.sha256(d.data).digest())
    return h.hexdigest()
