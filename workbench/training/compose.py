"""Compose the training config in-process, and expand a command line into the jobs it will run, each planned and
validated: what `python -m workbench.train` checks before Hydra creates any run dir, and what the dry run prices.

A multirun's sweep is expanded as Hydra's basic sweeper does (the grid's `hydra.sweeper.params`, then the command
line, which wins for the same key): one job per combination. Jobs that differ only in `ablation.arm`, `seed` and
`optim.lr` share one composition, those keys set on a copy; so pricing a grid costs a composition per grid, not
per job.
"""

from __future__ import annotations

import copy
import itertools
from functools import cache
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from workbench.training.errors import ConfigError, from_composition, one_paragraph
from workbench.training.grid import plain, register_resolvers, resolve_arm, run_id
from workbench.training.plan import Job, plan
from workbench.training.preflight import preflight
from workbench.training.schema import register
from workbench.training.validate import check_added_keys, validate

VERSION_BASE = "1.3"
CONF_DIR = Path(__file__).resolve().parents[1] / "conf"  # package data: found the same way after `pip install .`
PER_JOB = ("ablation.arm", "seed", "optim.lr")  # set on a copy of one composition


@cache
def register_configs() -> None:
    register()
    register_resolvers()


def compose_train(overrides: list[str], hydra_node: bool = False) -> DictConfig:
    """The composed `train` config for these command-line overrides (with the `hydra` node when asked)."""
    register_configs()
    with initialize_config_dir(str(CONF_DIR), version_base=VERSION_BASE):
        return compose("train", overrides=overrides, return_hydra_config=hydra_node)


def _parse(lines: list[str]) -> list:
    try:
        return OverridesParser.create().parse_overrides(lines)
    except HydraException as e:
        raise ConfigError(
            f"overrides {' '.join(lines)!r}: not valid override syntax ({one_paragraph(str(e))}); allowed: key=value, "
            "+key=value, ~key, group=option (quote values with brackets or commas)"
        ) from e


def group_options(group: str) -> list[str] | None:
    """The options of a config group (files under conf/ and ConfigStore entries); None when `group` is not one."""
    if group.startswith("hydra"):
        return None
    folder = CONF_DIR / group
    stored = ConfigStore.instance().list(group) if group in ConfigStore.instance().repo else []
    options = [p.stem for p in folder.glob("*.yaml")] if folder.is_dir() else []
    options += [name.removesuffix(".yaml") for name in stored]
    return sorted(set(options)) or None


def check_choices(parsed: list) -> None:
    """Every `group=option` names an existing option: Hydra would let a later choice of the group hide a bad one."""
    for o in parsed:
        options = group_options(o.key_or_group)
        if options is None or o.is_delete():
            continue
        for value in o.sweep_string_iterator() if o.is_sweep_override() else [o.value()]:
            if value is not None and str(value) not in options:
                public = ", ".join(x for x in options if not x.startswith("_"))
                raise ConfigError(f"{o.key_or_group}: got {value!r}; allowed: {public}")


def job_overrides(overrides: list[str], multirun: bool) -> list[list[str]]:
    """The override list of every job the command line runs (one for a single run)."""
    register_configs()
    parsed = _parse(overrides)
    check_choices(parsed)
    if not multirun:
        for o in parsed:
            if o.is_sweep_override():
                raise ConfigError(f"{o.key_or_group}: got the sweep {o.input_line.partition('=')[2]!r}; allowed: one "
                                  "value, or the same sweep under --multirun")  # fmt: skip
        return [overrides]
    fixed = [o.input_line for o in parsed if not o.is_sweep_override()]
    base = _compose(tuple(fixed), True)
    sweep = base.hydra.sweeper.params  # None without a grid: the command line's sweeps alone
    params = OmegaConf.to_container(sweep, resolve=True) if sweep else {}
    merged = {o.key_or_group: o for o in _parse([f"{k}={v}" for k, v in params.items()])}
    merged.update({o.key_or_group: o for o in parsed})
    axes = [[f"{o.get_key_element()}={v}" for v in o.sweep_string_iterator()] if o.is_sweep_override()
            else [o.input_line] for o in merged.values()]  # fmt: skip
    return [list(job) for job in itertools.product(*axes)]


@cache
def _compose(overrides: tuple[str, ...], hydra_node: bool) -> DictConfig:
    try:
        return compose_train(list(overrides), hydra_node)
    except (HydraException, OmegaConfBaseException) as e:
        raise from_composition(e) from e


def compose_job(overrides: list[str]) -> tuple[DictConfig, DictConfig]:
    """(the job's config as Hydra hands it to the job, before its arm is applied; its `hydra` node)."""
    parsed = _parse(overrides)
    shared = tuple(o.input_line for o in parsed if o.key_or_group not in PER_JOB or o.is_add() or o.is_delete())
    cfg = copy.deepcopy(_compose(shared, True))
    with open_dict(cfg):
        hydra_node = cfg.pop("hydra")
    check_added_keys([o for o in parsed if group_options(o.key_or_group) is None], cfg)
    for o in parsed:
        if o.input_line not in shared:
            try:
                OmegaConf.update(cfg, o.key_or_group, o.value(), merge=True)
            except OmegaConfBaseException as e:
                raise from_composition(e) from e
    return cfg, hydra_node


def planned_jobs(overrides: list[str], multirun: bool) -> list[list[Job]]:
    """Each job's plan (dependencies first), every job of every plan validated: the first error is raised."""
    plans: list[list[Job]] = []
    seen: set[Path] = set()
    for lines in job_overrides(overrides, multirun):
        raw, hydra_node = compose_job(lines)
        cfg = resolve_arm(raw)
        if multirun:
            try:  # resolves the whole config: a bad interpolation in an arm shows here first
                name = run_id(plain(cfg), cfg.ablation.arm, cfg.seed)  # as `wb_run_id`
            except OmegaConfBaseException as e:
                raise ConfigError(f"{_where(cfg)}{from_composition(e)}") from e
            run_dir = Path(hydra_node.sweep.dir) / name
        else:
            run_dir = Path(hydra_node.run.dir)
        plans.append(validated_plan(cfg, run_dir, seen, hydra_node.launcher._target_ if multirun else None))
    return plans


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
        raise ConfigError(f"{_where(job.cfg, job.what)}{e}") from e


def _where(cfg: DictConfig, what: str = "run") -> str:
    """What an error is about: the grid and arm, a dependency (`what`), or nothing for a plain run."""
    arm = cfg.ablation.arm
    return f"grid {cfg.ablation.name}, arm {arm}: " if arm else ("" if what == "run" else f"{what}: ")
