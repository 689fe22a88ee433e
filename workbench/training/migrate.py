"""`python -m workbench.training.migrate <sweep dir> ...`: rename run dirs made before run ids were the config's
difference from the schema defaults (before 2026-12), so a relaunch of their grid finds them instead of retraining.

Each `<sweep dir>/<run>/config.yaml` (the resolved config every run saves) gets the id today's code gives it; a dir
already named so, or whose new name is taken, is left alone. Prints one line per renamed dir.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from omegaconf import OmegaConf

from workbench.checkpoints import CONFIG_FILE
from workbench.training.grid import run_id


def migrate(sweep: Path) -> list[tuple[str, str]]:
    """(old name, new name) of every run dir of `sweep` renamed to its current id."""
    renamed = []
    for config in sorted(sweep.glob(f"*/{CONFIG_FILE}")):
        values = OmegaConf.to_container(OmegaConf.load(config), resolve=True)
        new = run_id(values, values.get("ablation", {}).get("arm"), values.get("seed"))
        old = config.parent
        if old.name != new and not (sweep / new).exists():
            old.rename(sweep / new)
            renamed.append((old.name, new))
    return renamed


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m workbench.training.migrate", description=__doc__.splitlines()[0])
    parser.add_argument("sweeps", type=Path, nargs="+", help="multirun dirs (multirun/<grid>)")
    for sweep in parser.parse_args(argv).sweeps:
        for old, new in migrate(sweep):
            print(f"{sweep}: {old} -> {new}")


if __name__ == "__main__":
    main()
