"""The default corpus, always present offline: the running interpreter's standard-library Python source."""

from __future__ import annotations

import sysconfig
from functools import cache
from pathlib import Path

from workbench.data.documents import Document, read_files

EXCLUDE = frozenset({"site-packages", "test", "tests"})  # installed packages and the test suites (~19 MB of noise)


def stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


@cache
def stdlib_documents() -> tuple[Document, ...]:
    """~800 files, ~12.6 MB on CPython 3.11; read once per process (the walk alone takes ~2 s, and a grid runs
    many jobs in one process), immutable so no caller can change another's corpus."""
    return tuple(read_files(stdlib_root(), "*.py", EXCLUDE))
