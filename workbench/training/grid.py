"""Ablation grids: a grid's arms, a job's arm applied through the schema, and a run's id.

A grid (workbench/conf/ablation/<name>.yaml) is data: `arms` (name -> {dotted.key: value}) and `factors` (factor
-> level -> {dotted.key: value}), whose product adds one arm per combination of levels, named `<level>_<level>`.
The sweeper (`training.sweep`) crosses `ablation.arm` x `seed` (x `optim.lr` over `ablation.lrs`); each job's arm
is applied here, with the schema's struct mode on: a key the schema lacks or a value of the wrong type is a
`ConfigError` naming the grid, the arm, the key and the closest valid keys, in the command line's words
(`training.errors`); the grid as a whole (shapes, names, seeds, rates, every arm's keys) is checked once before, by
`training.grid_check`. A run's id hashes the config's difference from the schema defaults, so a key added later at
its default changes no id.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
from collections.abc import Mapping
from functools import cache
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from workbench.accounting import iso_flop_steps
from workbench.config import ModelConfig
from workbench.decide import aa_arm
from workbench.precision import resolve_precision
from workbench.presets import PRESETS
from workbench.training.errors import ConfigError, from_omegaconf
from workbench.training.schema import DATA_SOURCES, ModelSchema, TrainConfig, model_node

# keys that do not change what a run computes, left out of its id so a relaunch with them changed still matches
NOT_IDENTITY = ("resume", "dry_run", "threads", "logger", "trainer.progress_bar", "trainer.monitor_every",
                "data.cache_dir", "distill.cache_dir", "ablation")  # fmt: skip


def arm_table(ablation: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Every arm of a grid: its `arms`, then one per combination of the `factors`' levels (in their order), of a grid
    `training.grid_check.check_grid` passed (no combination names another arm); then with `aa: true` the A/A arm
    `<baseline>_aa`, the baseline's keys under a name of its own (`decide.aa_arm`)."""
    arms = {name: dict(keys) for name, keys in ablation["arms"].items()}
    factors = [list(levels.items()) for levels in ablation["factors"].values()]
    for combo in itertools.product(*factors) if factors else ():
        arms["_".join(level for level, _ in combo)] = {k: v for _, keys in combo for k, v in keys.items()}
    base = ablation.get("baseline")
    if ablation.get("aa") and arms:
        if base not in arms:
            raise ConfigError(f"ablation.aa: got true with baseline {base!r}; allowed: true only with an "
                              f"ablation.baseline naming an arm ({', '.join(arms)})")  # fmt: skip
        if aa_arm(base) in arms:
            raise ConfigError(f"ablation.aa: the A/A arm's name {aa_arm(base)!r} is already an arm; allowed: "
                              "rename that arm, or aa: false")  # fmt: skip
        arms[aa_arm(base)] = dict(arms[base])
    return arms


def apply(cfg: DictConfig, overrides: Mapping[str, Any], where: str) -> None:
    """Set `overrides` ({dotted.key: value}) in `cfg` through its schema; a bad key or value names `where`.
    A map given for a schema group (`trainer: {max_steps: 3}`) sets its keys one by one, so that a typo in one is
    named; `model: <preset>` is that preset; any other value replaces what was there."""
    for key, value in overrides.items():
        if key == "model" and isinstance(value, str):  # a preset by name, as `model=<preset>` on the command line
            if value not in PRESETS:
                raise ConfigError(f"{where}: model: got {value!r}; allowed: a preset ({', '.join(PRESETS)}) or a "
                                  "map of model keys")  # fmt: skip
            cfg.model = model_node(PRESETS[value])
            continue
        node = OmegaConf.select(cfg, key, throw_on_missing=False) if isinstance(value, Mapping) else None
        if isinstance(node, DictConfig) and OmegaConf.get_type(node) is not dict:
            apply(cfg, {f"{key}.{k}": v for k, v in value.items()}, where)
            continue
        try:
            OmegaConf.update(cfg, key, value, merge=False)
        except OmegaConfBaseException as e:
            raise ConfigError(f"{where}: {from_omegaconf(e)}") from e


def apply_quick(cfg: DictConfig, where: str) -> None:
    """Apply `cfg.ablation.quick_overrides` to `cfg` (its `model` a preset by name), a bad key or value named
    `where`; values stay unresolved until the arm is applied."""
    quick = OmegaConf.to_container(cfg.ablation.quick_overrides, resolve=False)
    if "model" in quick:
        name = quick.pop("model")
        if name not in PRESETS:
            raise ConfigError(f"{where}: model: got {name!r}; allowed: a preset ({', '.join(PRESETS)})")
        cfg.model = model_node(PRESETS[name])
    apply(cfg, quick, where)


def resolve_arm(cfg: DictConfig) -> DictConfig:
    """A copy of `cfg` with quick mode and the selected arm applied (unchanged when no arm is selected)."""
    a = cfg.ablation
    if a.arm is None:
        return cfg
    out = copy.deepcopy(cfg)
    if a.quick:
        apply_quick(out, f"grid {a.name}, ablation.quick_overrides")
    arms = arm_table(OmegaConf.to_container(out.ablation, resolve=False))
    if a.arm not in arms:
        raise ConfigError(f"ablation.arm: got {a.arm!r}; allowed: {', '.join(arms)}")
    apply(out, arms[a.arm], f"grid {a.name}, arm {a.arm}")
    if out.logger.group is None:  # on W&B a grid is one group, and an arm's seeds share a job type
        out.logger.group = a.name
    out.logger.job_type = a.arm
    return out


# --- identity ----------------------------------------------------------------------------------------------------
def plain(cfg: DictConfig | Mapping[str, Any]) -> dict[str, Any]:
    """The resolved config as plain Python values (choices as their names)."""
    if isinstance(cfg, DictConfig):
        return OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    return dict(cfg)


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in tree.items():
        if isinstance(v, Mapping) and v:
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


@cache
def schema_defaults(source: str) -> dict[str, Any]:
    """The flattened schema defaults for a run on data source `source` (the model: `ModelConfig`'s defaults)."""
    base = OmegaConf.structured(TrainConfig)
    base.model = OmegaConf.structured(ModelSchema)
    base.data = OmegaConf.structured(DATA_SOURCES.get(source, DATA_SOURCES["stdlib"]))
    return flatten(plain(base))


def identity(resolved: Mapping[str, Any], computed_precision: str | None = None) -> dict[str, Any]:
    """What a run computes: its resolved config's keys that differ from the schema defaults, bookkeeping dropped.
    `computed_precision` stands for `trainer.precision: auto` (the precision actually used is what counts)."""
    flat = flatten(resolved)
    if computed_precision is not None and flat.get("trainer.precision") == "auto":
        flat["trainer.precision"] = computed_precision
    defaults = dict(schema_defaults(str(flat.get("data.source"))))
    if computed_precision is not None:
        defaults["trainer.precision"] = computed_precision
    kept = {k: v for k, v in flat.items() if not any(k == p or k.startswith(p + ".") for p in NOT_IDENTITY)}
    return {k: v for k, v in kept.items() if k not in defaults or defaults[k] != v}


def run_id(cfg: DictConfig | Mapping[str, Any], arm: str | None = None, seed: int | None = None) -> str:
    """`<arm>_s<seed>_<10 hex digits>`: readable, and equal only for the same arm, seed and computed config."""
    if isinstance(cfg, DictConfig):
        arm, seed = cfg.ablation.arm, cfg.seed
        cfg = plain(resolve_arm(cfg))
    trainer = cfg.get("trainer", {})
    precision, _ = resolve_precision(str(trainer.get("precision", "auto")), str(trainer.get("accelerator", "auto")))
    arm = arm or "run"
    blob = json.dumps({"arm": arm, "seed": seed, "config": identity(cfg, precision)}, sort_keys=True, default=str)
    return f"{arm}_s{seed}_{hashlib.sha256(blob.encode()).hexdigest()[:10]}"


# --- resolvers ---------------------------------------------------------------------------------------------------
def _iso_steps_resolver(flops: float | None, *, _root_: DictConfig) -> int:
    if flops is None:
        raise ConfigError("ablation.compute_budget: got None; allowed: a number of training FLOPs (an arm sets it)")
    model = ModelConfig.from_dict(OmegaConf.to_container(_root_.model, resolve=True))
    return iso_flop_steps(flops, model, _root_.data.batch_size, _root_.data.seq_len)


def register_resolvers() -> None:
    """`wb_*` resolvers the grids' values use (window sizes, widths, IsoFLOP steps)."""
    resolvers = {
        "wb_div": lambda a, b: int(a) // int(b),
        "wb_mul": lambda a, b: int(a) * int(b),
        "wb_iso_steps": _iso_steps_resolver,
    }
    for name, fn in resolvers.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)
