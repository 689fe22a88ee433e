"""Reject command-line overrides of keys the config lacks, naming the key and the keys allowed there.

Hydra's struct mode already refuses them, but its message does not list the alternatives.
"""

from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf

VERSION_BASE = "1.3"
CONF_DIR = Path(__file__).resolve().parents[2] / "conf"


class UnknownKeyError(ValueError):
    pass


def check_overrides(overrides: list[str], config_name: str = "train") -> None:
    """Raise `UnknownKeyError` for the first `key=value` whose key path is not in the composed config."""
    groups = {p.name for p in CONF_DIR.iterdir() if p.is_dir()} | {"ablation"}
    parsed = OverridesParser.create().parse_overrides(overrides)
    selections = [o.input_line for o in parsed if o.key_or_group in groups and o.value_type is not None]
    with initialize_config_dir(str(CONF_DIR), version_base=VERSION_BASE):
        cfg = compose(config_name, overrides=[s for s in selections if not s.startswith("~")])
    for o in parsed:
        key = o.key_or_group
        if o.is_add() or o.is_delete() or key.split(".")[0].split("/")[0] == "hydra" or key in groups:
            continue
        _check_path(cfg, key)


def _check_path(cfg: DictConfig, key: str) -> None:
    node, parts = cfg, key.split(".")
    for i, part in enumerate(parts):
        where = ".".join(parts[:i]) or "the top level"
        if not isinstance(node, DictConfig):
            raise UnknownKeyError(f"unknown config key {key!r}: {where} is a value, not a group of keys")
        if part not in set(node):  # `in node` is False for a mandatory `???` value, such as data.path
            allowed = ", ".join(sorted(str(k) for k in node))
            raise UnknownKeyError(f"unknown config key {key!r}: no {part!r} in {where}; allowed keys: {allowed}")
        node = None if OmegaConf.is_missing(node, part) else node[part]  # a `???` leaf is a value still unset
