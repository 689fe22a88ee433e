"""Compose the training config in-process (tests, notebooks, the CLI's error check), and validate a job's plan: the
run and each dependency it needs, before any run dir exists. A multirun's job list is `training.sweep`'s.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from workbench.training.errors import ConfigError, from_composition
from workbench.training.grid import register_resolvers
from workbench.training.plan import Job, plan
from workbench.training.schema import register
from workbench.training.validate import validate

VERSION_BASE = "1.3"
CONF_DIR = Path(__file__).resolve().parents[1] / "conf"  # package data: found the same way after `pip install .`


@cache
def register_configs() -> None:
    register()
    register_resolvers()


def compose_train(overrides: list[str], hydra_node: bool = False, config_dir: Path = CONF_DIR,
                  config_name: str = "train") -> DictConfig:  # fmt: skip
    """The composed `train` config for these command-line overrides (with the `hydra` node when asked)."""
    register_configs()
    with initialize_config_dir(str(config_dir), version_base=VERSION_BASE):
        return compose(config_name, overrides=overrides, return_hydra_config=hydra_node)


def checked_compose(overrides: list[str], hydra_node: bool = True, **where: object) -> DictConfig:
    """`compose_train`, a composition failure as a `ConfigError` in the command line's words."""
    try:
        return compose_train(overrides, hydra_node, **where)
    except (HydraException, OmegaConfBaseException) as e:
        raise from_composition(e) from e


def validated_plan(cfg: DictConfig, run_dir: Path, seen: set[Path] | None = None) -> list[Job]:
    """`plan(cfg, run_dir)` for a config with its arm applied, the run and each dependency not in `seen` validated."""
    seen = set() if seen is None else seen
    _validate(Job("run", cfg, run_dir))  # first: planning reads the distill and init_from keys
    seen.add(run_dir)
    jobs = plan(cfg, run_dir)
    for job in jobs:
        if job.run_dir not in seen:
            seen.add(job.run_dir)
            _validate(job)
    return jobs


def _validate(job: Job) -> None:
    """`validate`, its error prefixed with the grid and arm, or the dependency, it is about."""
    try:
        validate(job.cfg)
    except ConfigError as e:
        raise ConfigError(f"{where(job.cfg, job.what)}{e}") from e


def where(cfg: DictConfig, what: str = "run") -> str:
    """What an error is about: the grid and arm, a dependency (`what`), or nothing for a plain run."""
    arm = cfg.ablation.arm
    return f"grid {cfg.ablation.name}, arm {arm}: " if arm else ("" if what == "run" else f"{what}: ")
