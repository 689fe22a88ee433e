"""`python -m workbench.training.migrate <sweep dir> ...`: rename run dirs made before run ids were the config's
difference from the schema defaults (before 2026-12), so a relaunch of their grid finds them instead of retraining.

Each `<sweep dir>/<run>/config.yaml` (the resolved config every run saves) gets the id today's code gives it; a dir
already named so, or whose new name is taken, is left alone. Prints one line per renamed dir.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from workbench.checkpoints import CONFIG_FILE
from workbench.training.errors import ConfigError, one_paragraph
from workbench.training.grid import run_id


def run_configs(sweep: Path) -> list[Path]:
    """The config.yaml of every run dir of `sweep`, each readable; a `ConfigError` naming the folder or the file
    otherwise (checked for every sweep before any dir is renamed)."""
    allowed = f"allowed: multirun dirs (multirun/<grid>) holding run dirs with {CONFIG_FILE}"
    if not sweep.is_dir():
        raise ConfigError(f"sweeps: got {str(sweep)!r}, which is not a folder; {allowed}")
    configs = sorted(sweep.glob(f"*/{CONFIG_FILE}"))
    if not configs:
        raise ConfigError(f"sweeps: got {str(sweep)!r}, which holds no <run>/{CONFIG_FILE}; {allowed}")
    for config in configs:
        _read_config(config)
    return configs


def migrate(sweep: Path) -> list[tuple[str, str]]:
    """(old name, new name) of every run dir of `sweep` renamed to its current id."""
    renamed = []
    for config in run_configs(sweep):
        values = _read_config(config)
        new = run_id(values, values.get("ablation", {}).get("arm"), values.get("seed"))
        old = config.parent
        if old.name != new and not (sweep / new).exists():
            old.rename(sweep / new)
            renamed.append((old.name, new))
    return renamed


def _read_config(config: Path) -> dict[str, Any]:
    try:
        values = OmegaConf.to_container(OmegaConf.load(config), resolve=True)
    except (OmegaConfBaseException, yaml.YAMLError, UnicodeDecodeError) as e:
        raise ConfigError(f"{config}: not a readable config ({one_paragraph(str(e))}); allowed: the config.yaml a "
                          "run saved") from e  # fmt: skip
    if not isinstance(values, dict) or not isinstance(values.get("ablation", {}), dict):
        raise ConfigError(f"{config}: got a {type(values).__name__} without an ablation map; allowed: the config.yaml "
                          "a run saved")  # fmt: skip
    return values


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m workbench.training.migrate", description=__doc__.splitlines()[0])
    parser.add_argument("sweeps", type=Path, nargs="+", help="multirun dirs (multirun/<grid>)")
    sweeps = parser.parse_args(argv).sweeps
    try:
        for sweep in sweeps:
            run_configs(sweep)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    for sweep in sweeps:
        for old, new in migrate(sweep):
            print(f"{sweep}: {old} -> {new}")


if __name__ == "__main__":
    main()
