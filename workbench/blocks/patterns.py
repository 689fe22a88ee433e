"""Layer patterns: which layers are local (sliding-window) and which global."""

from __future__ import annotations

import re

from workbench.registry import LAYER_PATTERN

LOCAL, GLOBAL = "local", "global"
RATIO = re.compile(r"^\s*(\d+)\s*:\s*(\d+)\s*$")


LAYER_PATTERN.register("global")(lambda n_layers: [GLOBAL] * n_layers)
LAYER_PATTERN.register("local")(lambda n_layers: [LOCAL] * n_layers)


def ratio_pattern(n_local: int, n_global: int, n_layers: int) -> list[str]:
    """`n_local` local layers then `n_global` global ones, repeating; the first layer is local.

    With "5:1", layer i is global iff (i + 1) % 6 == 0, as in Gemma 3; "1:1" alternates from local, as in Gemma 2.
    """
    period = n_local + n_global
    return [LOCAL if i % period < n_local else GLOBAL for i in range(n_layers)]


def resolve_layer_types(pattern: str | list[str] | tuple[str, ...], n_layers: int) -> tuple[str, ...]:
    """Expand a pattern (registered name, "a:b" ratio, or explicit per-layer list) to one type per layer."""
    allowed = f"one of {LAYER_PATTERN.names()}, a ratio 'a:b' with a, b >= 1, or a list of 'local'/'global'"
    if isinstance(pattern, (list, tuple)):
        bad = [t for t in pattern if t not in (LOCAL, GLOBAL)]
        if bad or len(pattern) != n_layers:
            raise ValueError(
                f"layer_pattern: got {list(pattern)!r}; an explicit list needs n_layers={n_layers} entries, "
                f"each 'local' or 'global'"
            )
        return tuple(pattern)
    if isinstance(pattern, str) and pattern in LAYER_PATTERN:
        return tuple(LAYER_PATTERN.build(pattern, n_layers))
    match = RATIO.match(pattern) if isinstance(pattern, str) else None
    if match is None:
        raise ValueError(f"layer_pattern: got {pattern!r}; allowed: {allowed}")
    n_local, n_global = int(match.group(1)), int(match.group(2))
    if n_local < 1 or n_global < 1:
        raise ValueError(f"layer_pattern: got {pattern!r}; a ratio needs both parts >= 1 (use 'global' or 'local')")
    return tuple(ratio_pattern(n_local, n_global, n_layers))
