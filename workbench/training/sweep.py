"""The one job list of a multirun: a grid's arms x seeds x learning rates (from the typed `ablation` config) crossed
with the command line's own sweeps, each job composed, its arm applied, validated and planned once, its run dir
computed once (`<sweep dir>/<run id>`). The sweeper (`training.sweeper`) launches these jobs; the dry run prices them;
a later round adds jobs through `SweepJobs.add`, which plans them the same way.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from workbench.training.compose import validated_plan
from workbench.training.errors import ConfigError, from_composition, one_paragraph
from workbench.training.grid import arm_table, plain, resolve_arm, run_id
from workbench.training.grid_check import check_grid
from workbench.training.plan import Job

ARM, SEED, LR = "ablation.arm", "seed", "optim.lr"
PER_JOB = (ARM, SEED, LR)  # set on a copy of one composition: a grid costs a composition per distinct rest
QUICK_SUFFIX = "_quick"

Compose = Callable[[list[str]], DictConfig]  # overrides -> the composed config, its `hydra` node included


def parse(lines: list[str]) -> list[Override]:
    try:
        return OverridesParser.create().parse_overrides(lines)
    except HydraException as e:
        raise ConfigError(
            f"overrides {' '.join(lines)!r}: not valid override syntax ({one_paragraph(str(e))}); allowed: key=value, "
            "+key=value, ~key, group=option (quote values with brackets or commas)"
        ) from e


def sweep_values(o: Override) -> list[str]:
    """The values of a sweep override (`seed=1,2`, `range(3)`, `choice(a,b)`) as override strings."""
    return [str(v) for v in o.sweep_string_iterator()] if o.is_sweep_override() else [str(o.value())]


def grid_axes(master: DictConfig) -> dict[str, list[str]]:
    """A grid's axes from its typed `ablation` config: every arm, the seeds (quick_seeds in quick mode) and `lrs`
    (none when unset: the config's own rate), of a grid `check_grid` passed. Empty without a grid."""
    a = master.ablation
    arms = list(arm_table(OmegaConf.to_container(a, resolve=False)))
    if not arms:
        return {}
    seeds = a.quick_seeds if a.quick else a.seeds
    axes = {ARM: arms, SEED: [str(s) for s in seeds]}
    if a.lrs:
        axes[LR] = [str(lr) for lr in a.lrs]
    return axes


def sweep_dir(master: DictConfig) -> Path:
    """`hydra.sweep.dir`, with `_quick` appended in quick mode unless the command line set the dir itself."""
    node = master.hydra
    base = Path(str(node.sweep.dir))
    given = any(str(o).startswith("hydra.sweep.dir=") for o in node.overrides.hydra)
    return base if given or not master.ablation.quick else base.with_name(base.name + QUICK_SUFFIX)


@dataclass
class SweepJob:
    """One job of the sweep: the overrides the launcher hands it, and its validated plan (the run itself last)."""

    overrides: list[str]
    plan: list[Job]

    @property
    def run(self) -> Job:
        return self.plan[-1]


@dataclass
class SweepJobs:
    """Every job of a sweep so far, in launch order, each planned once; `add` plans more (a later round's)."""

    compose: Compose
    fixed: list[str]  # the command line's non-sweep overrides, handed to every job
    directory: Path
    launcher: str  # the launcher's `_target_`: preflight checks what each job may ask of the machine under it
    jobs: list[SweepJob] = field(default_factory=list)
    _seen: set[Path] = field(default_factory=set)
    _cache: dict[tuple[str, ...], DictConfig] = field(default_factory=dict)

    def add(self, combos: list[dict[str, str]]) -> list[SweepJob]:
        """Plan one job per combination of axis values ({key: value}); a run dir already planned is not added twice.
        Returns the new jobs."""
        new = []
        for combo in combos:
            job = self.plan(combo)
            if job.run.run_dir not in {j.run.run_dir for j in self.jobs}:
                self.jobs.append(job)
                new.append(job)
        return new

    def plan(self, combo: Mapping[str, str]) -> SweepJob:
        """One combination's job, composed (cached), its arm applied, validated and planned; not added."""
        shared = tuple(self.fixed + [f"{k}={v}" for k, v in combo.items() if k not in PER_JOB])
        if shared not in self._cache:
            self._cache[shared] = self.compose(list(shared))
        cfg = copy.deepcopy(self._cache[shared])
        with open_dict(cfg):
            cfg.pop("hydra", None)
        for key in PER_JOB:
            if key in combo:
                try:
                    OmegaConf.update(cfg, key, parse([f"{key}={combo[key]}"])[0].value(), merge=True)
                except OmegaConfBaseException as e:
                    raise from_composition(e) from e
        cfg = resolve_arm(cfg)
        try:  # resolves the whole config: a bad interpolation in an arm shows here first
            name = run_id(plain(cfg), cfg.ablation.arm, cfg.seed)
        except OmegaConfBaseException as e:
            where = f"grid {cfg.ablation.name}, arm {cfg.ablation.arm}: " if cfg.ablation.arm else ""
            raise ConfigError(f"{where}{from_composition(e)}") from e
        plan = validated_plan(cfg, self.directory / name, self._seen, self.launcher)
        overrides = [*self.fixed, *(f"{k}={v}" for k, v in combo.items())]
        return SweepJob(overrides, plan)


def initial_combos(master: DictConfig, parsed: list[Override]) -> list[dict[str, str]]:
    """The first round: the grid's axes, then the command line's (a command-line key replaces the grid's axis: a
    fixed `seed=3` runs seed 3 only), crossed. The grid is checked first, as a whole (`check_grid`)."""
    check_grid(master)
    axes = grid_axes(master)
    for o in parsed:
        key = o.get_key_element()
        if o.is_sweep_override():
            axes[key] = sweep_values(o)
        else:
            axes.pop(key, None)
    keys = list(axes)
    return [dict(zip(keys, values, strict=True)) for values in itertools.product(*axes.values())]


def fixed_overrides(parsed: list[Override]) -> list[str]:
    return [o.input_line for o in parsed if not o.is_sweep_override()]


def single_plan(config: DictConfig) -> list[Job]:
    """A single run's validated plan, from its composed config (the `hydra` node included), its arm applied."""
    run_dir = Path(str(config.hydra.run.dir))
    check_grid(config)
    cfg = config.copy()
    with open_dict(cfg):
        del cfg["hydra"]
    return validated_plan(resolve_arm(cfg), run_dir)


def planned_jobs(overrides: list[str], multirun: bool = True, config_dir: Path | None = None) -> list[list[Job]]:
    """The plans the command line runs (a multirun: its first round), composed in-process as the CLI and the sweeper
    compose them (tests, notebooks): every job validated, a user error raised as a `ConfigError`."""
    from workbench.training.compose import CONF_DIR, checked_compose

    parsed = parse(overrides)
    fixed = fixed_overrides(parsed)
    where = {"config_dir": config_dir or CONF_DIR}
    if not multirun:
        if sweeps := [o for o in parsed if o.is_sweep_override()]:
            raise ConfigError(f"{sweeps[0].key_or_group}: got the sweep {sweeps[0].input_line.partition('=')[2]!r}; "
                              "allowed: one value, or the same sweep under --multirun")  # fmt: skip
        return [single_plan(checked_compose(fixed, **where))]
    master = checked_compose(fixed, **where)
    jobs = SweepJobs(
        lambda lines: checked_compose(lines, **where),
        fixed,
        sweep_dir(master).absolute(),
        str(master.hydra.launcher._target_),
    )
    jobs.add(initial_combos(master, parsed))
    return [j.plan for j in jobs.jobs]
