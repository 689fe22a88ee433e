"""Which cases of a long table of like cases the fast tier (`pytest -m "not slow"`) runs: a few that reach each kind
of check, while `make test` runs them all. Each case costs a full config composition (about a second), so the whole
tables would take most of the fast tier's two minutes."""

from __future__ import annotations

from collections.abc import Collection, Iterable

import pytest


def slow_unless(fast: bool) -> tuple:
    """The marks of a case: none for a case the fast tier keeps, `slow` otherwise."""
    return () if fast else (pytest.mark.slow,)


def tiered(cases: Iterable, fast: Collection, marks: dict | None = None) -> list:
    """Each case as a `pytest.param` (a tuple case spread over the arguments), marked `slow` unless it is in `fast`;
    `marks`: further marks of some cases. A name in `fast` that is no case fails the collection instead of quietly
    leaving the fast tier without it."""
    cases = list(cases)
    if missing := [f for f in fast if f not in cases]:
        raise ValueError(f"fast cases that are not cases of the table: {missing}")
    out = []
    for c in cases:
        extra = marks.get(c, ()) if marks else ()  # only hashable cases carry further marks
        out.append(pytest.param(*(c if isinstance(c, tuple) else (c,)), marks=(*slow_unless(c in fast), *extra)))
    return out
