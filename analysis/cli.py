"""The analysis command lines' one contract for bad input: one `error:` line that names the file or flag and what
is allowed, exit status 2, no traceback and no usage block. A bug in the code keeps its traceback: only the error
types a CLI names as its users' (a missing or unreadable file, a bad flag) are translated."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NoReturn

USAGE = 2  # argparse's own exit status for a usage error


class InputError(ValueError):
    """A file or flag an analysis CLI was given that it cannot use; its text names the file or flag."""


def fail(message: object) -> NoReturn:
    print(f"error: {' '.join(str(message).split())}", file=sys.stderr)
    sys.exit(USAGE)


class Parser(argparse.ArgumentParser):
    """argparse, its usage errors (unknown flag, a value of the wrong type) as one `error:` line."""

    def error(self, message: str) -> NoReturn:
        fail(f"{message} (see {self.prog} --help)")


@contextmanager
def user_errors(*kinds: type[BaseException]) -> Iterator[None]:
    """Inside, an `InputError` or an exception of `kinds` ends the CLI with its one `error:` line."""
    try:
        yield
    except (InputError, *kinds) as e:
        fail(e)


def at_least(flag: str, value: float | None, lo: float) -> None:
    """A numeric flag's floor: `--bootstrap -1` is not a number of resamples."""
    if value is not None and value < lo:
        raise InputError(f"{flag}: got {value}; allowed: a number >= {lo}")
