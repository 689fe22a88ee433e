"""Layer patterns: which layers are local (sliding-window) and which global."""

from __future__ import annotations

import re

from workbench.registry import LAYER_PATTERN

LOCAL, GLOBAL = "local", "global"
RATIO = re.compile(r"^\s*(\d+)\s*:\s*(\d+)\s*$")
LAST_GLOBAL = "+last_global"  # suffix: the pattern, then the last layer made global (Gemma 4)


LAYER_PATTERN.register("global")(lambda n_layers: [GLOBAL] * n_layers)
LAYER_PATTERN.register("local")(lambda n_layers: [LOCAL] * n_layers)


def ratio_pattern(n_local: int, n_global: int, n_layers: int) -> list[str]:
    """`n_local` local layers then `n_global` global ones, repeating; the first layer is local.

    With "5:1", layer i is global iff (i + 1) % 6 == 0, as in Gemma 3; "1:1" alternates from local, as in Gemma 2.
    """
    period = n_local + n_global
    return [LOCAL if i % period < n_local else GLOBAL for i in range(n_layers)]


def resolve_layer_types(pattern: str | list[str] | tuple[str, ...], n_layers: int) -> tuple[str, ...]:
    """Expand a pattern (registered name, "a:b" ratio, or explicit per-layer list) to one type per layer.

    A name or ratio may end in "+last_global": Gemma 4 makes its last layer global whatever the ratio gives, so
    that the final hidden state has seen the whole context ("5:1+last_global" at 8 layers: global at 5 and 7).
    """
    allowed = (
        f"one of {LAYER_PATTERN.names()}, a ratio 'a:b' with a, b >= 1, either optionally followed by "
        f"{LAST_GLOBAL!r}, or a list of 'local'/'global'"
    )
    if isinstance(pattern, (list, tuple)):
        bad = [t for t in pattern if t not in (LOCAL, GLOBAL)]
        if bad or len(pattern) != n_layers:
            raise ValueError(
                f"layer_pattern: got {list(pattern)!r}; an explicit list needs n_layers={n_layers} entries, "
                f"each 'local' or 'global'"
            )
        return tuple(pattern)
    if not isinstance(pattern, str):
        raise ValueError(f"layer_pattern: got {pattern!r}; allowed: {allowed}")
    base = pattern.removesuffix(LAST_GLOBAL)
    types = _resolve_name_or_ratio(pattern, base, n_layers, allowed)
    if base != pattern:
        types[-1] = GLOBAL
    return tuple(types)


def _resolve_name_or_ratio(pattern: str, base: str, n_layers: int, allowed: str) -> list[str]:
    if base in LAYER_PATTERN:
        return list(LAYER_PATTERN.build(base, n_layers))
    match = RATIO.match(base)
    if match is None:
        raise ValueError(f"layer_pattern: got {pattern!r}; allowed: {allowed}")
    n_local, n_global = int(match.group(1)), int(match.group(2))
    if n_local < 1 or n_global < 1:
        raise ValueError(f"layer_pattern: got {pattern!r}; a ratio needs both parts >= 1 (use 'global' or 'local')")
    return ratio_pattern(n_local, n_global, n_layers)
