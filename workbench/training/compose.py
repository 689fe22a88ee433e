"""Compose the training config in-process (tests, notebooks, the CLI's error check), and validate a job's plan: the
run and each dependency it needs, before any run dir exists. A multirun's job list is `training.sweep`'s.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import yaml
from hydra import compose, initialize_config_dir
from hydra.core.config_loader import ConfigLoader
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from workbench.training.errors import ConfigError, from_composition
from workbench.training.grid import register_resolvers
from workbench.training.grid_check import composition_error
from workbench.training.plan import Job, plan
from workbench.training.preflight import preflight
from workbench.training.schema import register
from workbench.training.validate import check_added_keys, validate

VERSION_BASE = "1.3"
CONF_DIR = Path(__file__).resolve().parents[1] / "conf"  # package data: found the same way after `pip install .`


@cache
def register_configs() -> None:
    register()
    register_resolvers()


def compose_train(overrides: list[str], hydra_node: bool = False, config_dir: Path = CONF_DIR,
                  config_name: str = "train", check: bool = False) -> DictConfig:  # fmt: skip
    """The composed `train` config for these command-line overrides (with the `hydra` node when asked); `check`:
    first every `group=option` must name an existing option (Hydra lets a later choice of a group hide a bad one),
    and a grid file that fails to compose is named with its key (`grid_check.composition_error`)."""
    register_configs()
    with initialize_config_dir(str(config_dir), version_base=VERSION_BASE):
        loader = GlobalHydra.instance().config_loader()
        if check:
            check_choices(overrides, loader, config_name)
        try:
            cfg = compose(config_name, overrides=overrides, return_hydra_config=hydra_node)
        except (HydraException, OmegaConfBaseException, yaml.YAMLError) as e:
            roots = [Path(s.path) for s in loader.get_sources() if s.scheme() == "file"]
            if check and (named := composition_error(e, overrides, roots)):
                raise named from e  # the grid file, its key and what is allowed
            raise
        if check:  # `+key=v` on a key the schema lacks: composition adds it, and no run would read it
            groups = set(loader.list_groups(""))
            parsed = OverridesParser.create().parse_overrides(overrides)
            check_added_keys([o for o in parsed if o.key_or_group.split("/")[0] not in groups], cfg)
        return cfg


def check_choices(overrides: list[str], loader: ConfigLoader, config_name: str) -> None:
    groups = set(loader.list_groups(""))
    for o in OverridesParser.create().parse_overrides(overrides):
        group = o.key_or_group
        if group.startswith("hydra") or o.is_delete() or group.split("/")[0] not in groups:
            continue
        options = loader.get_group_options(group, config_name=config_name, overrides=overrides)
        for value in o.sweep_string_iterator() if o.is_sweep_override() else [o.value()]:
            if options and value is not None and str(value) not in options:
                public = ", ".join(x for x in options if not x.startswith("_"))
                raise ConfigError(f"{group}: got {value!r}; allowed: {public}")


def checked_compose(overrides: list[str], hydra_node: bool = True, **where: object) -> DictConfig:
    """`compose_train` with its checks, a composition failure as a `ConfigError` in the command line's words."""
    try:
        return compose_train(overrides, hydra_node, check=True, **where)
    except (HydraException, OmegaConfBaseException, yaml.YAMLError) as e:
        raise from_composition(e) from e


def validated_plan(
    cfg: DictConfig, run_dir: Path, seen: set[Path] | None = None, launcher: str | None = None
) -> list[Job]:
    """`plan(cfg, run_dir)` for a config with its arm applied, the run and each dependency not in `seen` validated
    and preflighted (`launcher`: the multirun's `hydra.launcher._target_`; None: a single run)."""
    seen = set() if seen is None else seen
    _validate(Job("run", cfg, run_dir), launcher)  # first: planning reads the distill and init_from keys
    seen.add(run_dir)
    jobs = plan(cfg, run_dir)
    for job in jobs:
        if job.run_dir not in seen:
            seen.add(job.run_dir)
            _validate(job, launcher)
    return jobs


def _validate(job: Job, launcher: str | None) -> None:
    """`validate` and `preflight`, their error prefixed with the grid and arm, or the dependency, it is about."""
    try:
        validate(job.cfg)
        preflight(job.cfg, job.run_dir if job.what == "run" else None, launcher)
    except ConfigError as e:
        raise ConfigError(f"{where(job.cfg, job.what)}{e}") from e


def where(cfg: DictConfig, what: str = "run") -> str:
    """What an error is about: the grid and arm, a dependency (`what`), or nothing for a plain run."""
    arm = cfg.ablation.arm
    return f"grid {cfg.ablation.name}, arm {arm}: " if arm else ("" if what == "run" else f"{what}: ")
