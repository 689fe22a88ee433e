"""The default corpus, always present offline: the running interpreter's standard-library Python source."""

from __future__ import annotations

import sysconfig
from pathlib import Path

from workbench.data.documents import Document, read_files

EXCLUDE = frozenset({"site-packages", "test", "tests"})  # installed packages and the test suites (~19 MB of noise)


def stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def stdlib_documents() -> list[Document]:
    """~800 files, ~12.6 MB on CPython 3.11."""
    return read_files(stdlib_root(), "*.py", EXCLUDE)
