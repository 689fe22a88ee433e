"""Shared command-line plumbing: resolve preset names (or `--all`) to configs."""

from __future__ import annotations

import argparse

from workbench.config import ModelConfig
from workbench.presets import get_preset, list_presets


def add_preset_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("presets", nargs="*", help=f"preset names: {', '.join(list_presets())}")
    parser.add_argument("--all", action="store_true", help="every preset")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def selected_presets(parser: argparse.ArgumentParser, args: argparse.Namespace) -> dict[str, ModelConfig]:
    names = list_presets() if args.all else args.presets
    if not names:
        parser.error("give at least one preset name or --all")
    try:
        return {name: get_preset(name) for name in names}
    except ValueError as err:
        parser.error(str(err))


def print_table(header: list[str], rows: list[list[object]]) -> None:
    cells = [header] + [[f"{c:,}" if isinstance(c, int) else str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    for n, row in enumerate(cells):
        print("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))))
        if n == 0:
            print("  ".join("-" * w for w in widths))
