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
