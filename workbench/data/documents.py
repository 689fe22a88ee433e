"""Documents read from local text files, split train/val/selection deterministically by a hash of each name."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Document:
    name: str  # relative path, or a row id
    data: bytes


def hash_fraction(name: str) -> float:
    """Stable across machines and runs: the first 8 hex digits of sha1(name) as a fraction in [0, 1)."""
    return int(hashlib.sha1(name.encode()).hexdigest()[:8], 16) / 16**8


def split(
    docs: Sequence[Document], val_fraction: float, selection_fraction: float
) -> tuple[list[Document], list[Document], list[Document]]:
    """(train, val, selection) by `hash_fraction`: val is [0, val_fraction), as before the selection split existed;
    selection is the next `selection_fraction` of the hash space, taken from train's range. Carving it out of val
    instead would leave the stdlib corpus (14 val files at 0.02) 9 val files and 5 selection files, 59% of whose bytes
    are one encoding table; out of train, val keeps every file and train loses 1.8% of its bytes."""
    parts: tuple[list[Document], list[Document], list[Document]] = ([], [], [])
    for d in docs:
        h = hash_fraction(d.name)
        parts[1 if h < val_fraction else 2 if h < val_fraction + selection_fraction else 0].append(d)
    if len(docs) == 1 or not all(parts):  # one file (or an unlucky split): hold out its tail instead
        joined = b"".join(d.data for d in docs)
        val_cut = int(len(joined) * (1 - val_fraction))
        selection_cut = int(len(joined) * (1 - val_fraction - selection_fraction))
        return ([Document("train", joined[:selection_cut])], [Document("val", joined[val_cut:])],
                [Document("selection", joined[selection_cut:val_cut])])  # fmt: skip
    return parts


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


def content_hash(docs: Sequence[Document]) -> str:
    h = hashlib.sha256()
    for d in docs:
        h.update(d.name.encode() + b"\0" + hashlib.sha256(d.data).digest())
    return h.hexdigest()
