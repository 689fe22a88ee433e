"""Name -> builder registries: a new block variant is one registered class plus a config value."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class Registry:
    """Maps names to builders for one kind of block (attention, norm, mlp, ...)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._builders: dict[str, Callable[..., Any]] = {}

    def register(self, name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        def decorator(builder: Callable[..., Any]) -> Callable[..., Any]:
            if name in self._builders:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._builders[name] = builder
            return builder

        return decorator

    def get(self, name: str) -> Callable[..., Any]:
        if name not in self._builders:
            raise ValueError(f"unknown {self.kind} {name!r}; registered: {', '.join(self.names())}")
        return self._builders[name]

    def build(self, name: str, *args: Any, **kwargs: Any) -> Any:
        return self.get(name)(*args, **kwargs)

    def names(self) -> list[str]:
        return sorted(self._builders)

    def __contains__(self, name: object) -> bool:
        return name in self._builders


ATTENTION = Registry("attention")
NORM = Registry("norm")
MLP = Registry("mlp")
POSITION = Registry("position encoding")
LAYER_PATTERN = Registry("layer pattern")
