"""Name -> builder registries: a new block variant is one registered class plus a config value.

A registry may name the methods every object it builds must have: attention and MLP kinds report their own
costs to `workbench.accounting`, so a kind without them fails when it is built, not with a wrong count later.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class Registry:
    """Maps names to builders for one kind of block (attention, norm, mlp, ...)."""

    def __init__(self, kind: str, requires: tuple[str, ...] = ()) -> None:
        self.kind = kind
        self.requires = requires
        self._builders: dict[str, Callable[..., Any]] = {}

    def register(self, name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        def decorator(builder: Callable[..., Any]) -> Callable[..., Any]:
            if name in self._builders:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._builders[name] = builder
            return builder

        return decorator

    def unregister(self, name: str) -> None:
        """Remove a variant, e.g. one a test registered for itself."""
        self.get(name)
        del self._builders[name]

    def get(self, name: str) -> Callable[..., Any]:
        if name not in self._builders:
            raise ValueError(f"unknown {self.kind} {name!r}; registered: {', '.join(self.names())}")
        return self._builders[name]

    def build(self, name: str, *args: Any, **kwargs: Any) -> Any:
        built = self.get(name)(*args, **kwargs)
        missing = [method for method in self.requires if not hasattr(built, method)]
        if missing:
            raise TypeError(
                f"{self.kind} {name!r} builds a {type(built).__name__} without {', '.join(missing)}; "
                f"every {self.kind} kind has: {', '.join(self.requires)} (see workbench/accounting.py)"
            )
        return built

    def names(self) -> list[str]:
        return sorted(self._builders)

    def __contains__(self, name: object) -> bool:
        return name in self._builders


ATTENTION = Registry("attention", requires=("window", "new_cache", "cached_slots", "kv_bytes_per_token", "flops",
                                            "pair_flops"))  # fmt: skip
NORM = Registry("norm")
MLP = Registry("mlp", requires=("flops",))
POSITION = Registry("position encoding")
LAYER_PATTERN = Registry("layer pattern")
