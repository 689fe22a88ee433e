"""Every rule of a grid file, in one pass, before any job is planned or any dir exists.

`check_grid` runs on the composed config wherever a grid is read: the sweeper's and `planned_jobs`' job list
(`training.sweep.initial_combos`, before `grid_axes` reads it) and a single run (`training.sweep.single_plan`). A
grid file that does not even compose (YAML it cannot parse, `arms: [a, b]` where the schema wants a map) is explained
by `composition_error`, which reads the raw file with the same shape rules (`check_shape`). Every error names the
grid file, the key and what is allowed.
Names become run dirs (`multirun/<name>/<arm>_s<seed>_<hash>`), so they must be plain: `../..` would write outside
`multirun/`.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import math
import re
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import MissingConfigException
from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from workbench.training.errors import ConfigError, from_composition, from_yaml, shown
from workbench.training.grid import apply, apply_quick, arm_table
from workbench.training.schema import AblationConfig, field_errors

GLOBAL = re.compile(r"(\s*#[^\n]*\n)*?\s*#\s*@package\s+_global_\b")  # Hydra's header, in the leading comments
PLAIN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]*")
PLAIN_WORDS = "a plain name: letters, digits, _ and -, not starting with - (it names a dir)"
VAR = re.compile(r"\bablation\.vars\.(\w+)")
KEYS = "{dotted.key: value}"
MAPS = {
    "arms": f"a map arm name -> {KEYS}",
    "factors": f"a map factor -> level -> {KEYS}",
    "vars": "a map name -> value",
    "quick_overrides": f"a map {KEYS}",
}
SEEDS = "a list of distinct integers >= 0, e.g. [0, 1, 2]"
LISTS = {
    "seeds": SEEDS,
    "quick_seeds": SEEDS,
    "lrs": "a list of distinct learning rates > 0, e.g. [1.0e-3, 3.0e-3] ([]: the config's optim.lr)",
    "lr_bounds": "two numbers [low, high], 0 < low < high",
}


def grid_file(cfg: DictConfig) -> str | None:
    """The grid file the config was composed from (`+ablation=<name>`), as its path where it is a file (relative to
    the working dir when under it), else `ablation/<name>.yaml`; None without one (or without the `hydra` node)."""
    if "hydra" not in cfg:
        return None
    runtime = cfg.hydra.runtime
    choice = runtime.choices.get("ablation")
    if not choice:
        return None
    for source in runtime.config_sources:
        path = Path(str(source.path)) / "ablation" / f"{choice}.yaml"
        if source.schema == "file" and path.is_file():
            return shown(path)
    return f"ablation/{choice}.yaml"


def bad(at: str, key: str, value: Any, allowed: str) -> ConfigError:
    """`<at>ablation.<key>: got <value>; allowed: <allowed>` (`at`: `grid file <path>: `, or empty without one)."""
    return ConfigError(f"{at}ablation.{key}: got {value!r}; allowed: {allowed}")


def check_shape(a: Mapping[str, Any], at: str) -> None:
    """The shape of an `ablation` node (plain values, as written): maps where maps go, lists where lists go, every
    arm and level a map of keys, every factor with levels, every arm and level name plain."""
    for key, allowed in MAPS.items():
        if key in a and not isinstance(a[key], Mapping):
            raise bad(at, key, a[key], allowed)
    for key, allowed in LISTS.items():
        if key in a and not isinstance(a[key], list):
            raise bad(at, key, a[key], allowed)
    for name, keys in a.get("arms", {}).items():
        check_name(at, f"arms.{name}", name)
        if not isinstance(keys, Mapping):
            raise bad(at, f"arms.{name}", keys, f"a map {KEYS} ({{}}: the config as is)")
    for factor, levels in a.get("factors", {}).items():
        if isinstance(levels, list):
            raise bad(at, f"factors.{factor}", levels, f"a map level name -> {KEYS}, not a list: name each level")
        if not isinstance(levels, Mapping) or not levels:
            raise bad(at, f"factors.{factor}", levels, f"at least one level: a map level name -> {KEYS}")
        for level, keys in levels.items():
            check_name(at, f"factors.{factor}.{level}", level)
            if not isinstance(keys, Mapping):
                raise bad(at, f"factors.{factor}.{level}", keys, f"a map {KEYS} ({{}}: the config as is)")


def check_name(at: str, key: str, name: Any) -> None:
    """A name that becomes a dir (the sweep's, an arm's run dirs) is plain: no `/`, `..`, spaces or dots."""
    if not isinstance(name, str) or not PLAIN.fullmatch(name):
        raise ConfigError(f"{at}ablation.{key}: the name {name!r} is not plain; allowed: {PLAIN_WORDS}")


def check_grid(cfg: DictConfig) -> None:
    """Every rule of the grid in `cfg` (composed, its `hydra` node kept to name the file): a `ConfigError` naming
    the grid file, the key and what is allowed. Without a grid (no file, no arms) only `ablation.name` is checked:
    it names the sweep dir of any multirun."""
    file = grid_file(cfg)
    at = f"grid file {file}: " if file else ""  # what each error begins with
    node = cfg.ablation
    a = OmegaConf.to_container(node, resolve=False)
    value = resolver(node, at)
    check_name(at, "name", value("name"))
    if file is None and not a["arms"] and not a["factors"]:
        return
    check_shape(a, at)
    check_vars(OmegaConf.to_container(cfg, resolve=False), a, at)
    arms = check_arms(a, at)
    ranged = {f.name: value(f.name) for f in dataclasses.fields(AblationConfig) if f.metadata.get("check")}
    for key, got, allowed in field_errors(AblationConfig(**ranged), "ablation."):
        raise ConfigError(f"{at}{key}: got {got!r}; allowed: {allowed}")
    for key in ("seeds", "quick_seeds"):
        check_distinct(at, key, value(key), SEEDS, lambda s: isinstance(s, int) and s >= 0)
    low, high = value("lr_bounds")
    check_distinct(at, "lrs", value("lrs"), f"{LISTS['lrs']}, within ablation.lr_bounds [{low}, {high}]",
                   lambda r: isinstance(r, int | float) and math.isfinite(r) and low <= r <= high)  # fmt: skip
    seeds = value("quick_seeds" if value("quick") else "seeds")
    if (most := value("max_seeds")) is not None and most < len(seeds):
        raise bad(at, "max_seeds", most, f"null, or at least the {len(seeds)} seeds the grid starts with {seeds}")
    for key in ("baseline", "control"):
        if (arm := value(key)) is not None and arm not in arms:
            raise bad(at, key, arm, f"an arm of the grid ({', '.join(arms)})")
    if value("control") is not None and value("control") == value("baseline"):
        raise bad(at, "control", value("control"), "an arm other than the baseline (it must come out worse)")
    check_keys(cfg, at, value("quick"), value("name"))


def check_keys(cfg: DictConfig, at: str, quick: bool, name: str) -> None:
    """Every key of `quick_overrides` (in quick mode: the defaults name keys of the text sources, which a grid run in
    full mode on another source, e.g. `experiment=recall_cpu`, does not have) and of every arm (in this mode) through
    the schema, as each job applies them: a single run of one arm checks the others too."""
    run = cfg.copy()  # shallow: the `hydra` node leaves this copy only
    with open_dict(run):
        run.pop("hydra", None)
    if quick:
        run = copy.deepcopy(run)
        apply_quick(run, f"{at}ablation.quick_overrides")
    for arm, keys in arm_table(OmegaConf.to_container(run.ablation, resolve=False)).items():
        apply(copy.deepcopy(run), keys, f"grid {name}, arm {arm}")


def resolver(node: DictConfig, at: str) -> Any:
    """`value(key)`: the resolved plain value of `node[key]`, a failed interpolation a `ConfigError` naming it."""

    def value(key: str) -> Any:
        try:
            v = node[key]
            return OmegaConf.to_container(v, resolve=True) if isinstance(v, DictConfig | ListConfig) else v
        except OmegaConfBaseException as e:
            raise ConfigError(f"{at}{from_composition(e)}") from e

    return value


def check_arms(a: Mapping[str, Any], at: str) -> list[str]:
    """Every arm's name (`arms`, then the factors' product): at least one, each once."""
    names = list(a["arms"])
    combos = ["_".join(c) for c in itertools.product(*[list(levels) for levels in a["factors"].values()])]
    for name in combos if a["factors"] else []:
        if name in names:
            where = "an arm of ablation.arms" if name in a["arms"] else "another combination of levels"
            raise ConfigError(f"{at}ablation.factors: the combination {name!r} is also {where}; allowed: "
                              "level names whose combinations (<level>_<level>) name no other arm")  # fmt: skip
        names.append(name)
    if not names:
        raise bad(at, "arms", a["arms"], f"at least one arm: ablation.arms ({MAPS['arms']}) or ablation.factors")
    return names


def check_distinct(at: str, key: str, values: list[Any], allowed: str, ok: Any) -> None:
    """Each value once and `ok`; at least one, except rates (none: the config's own `optim.lr`)."""
    if key != "lrs" and not values:
        raise bad(at, key, values, f"at least one: {allowed}")
    twice = [v for v, n in Counter(values).items() if n > 1]
    if twice or not all(ok(v) for v in values):
        more = f" ({twice[0]!r} twice: it would be priced and trained twice)" if twice else ""
        raise ConfigError(f"{at}ablation.{key}: got {values!r}{more}; allowed: {allowed}")


def check_vars(config: Mapping[str, Any], a: Mapping[str, Any], at: str) -> None:
    """Every `${ablation.vars.<name>}` anywhere in the config names a var of `ablation.vars` (or one quick mode
    sets)."""
    known = set(a["vars"])
    for key, v in a["quick_overrides"].items():
        if key == "ablation.vars" and isinstance(v, Mapping):
            known |= set(v)
        elif key.startswith("ablation.vars."):
            known.add(key.split(".")[2])
    for key, text in strings(config):
        for name in VAR.findall(text) if "${" in text else []:
            if name not in known:
                allowed = ", ".join(sorted(known)) or "none (ablation.vars is empty)"
                raise ConfigError(f"{at}{key}: ${{ablation.vars.{name}}} names no var of ablation.vars; "
                                  f"allowed: {allowed}")  # fmt: skip


def strings(tree: Any, prefix: str = "") -> list[tuple[str, str]]:
    """(dotted key, text) of every string value in a plain tree."""
    if isinstance(tree, Mapping):
        return [kv for k, v in tree.items() if k != "hydra" for kv in strings(v, f"{prefix}{k}.")]
    if isinstance(tree, list):
        return [kv for i, v in enumerate(tree) for kv in strings(v, f"{prefix}{i}.")]
    return [(prefix.rstrip("."), tree)] if isinstance(tree, str) else []


def composition_error(e: BaseException, overrides: list[str], roots: list[Path]) -> ConfigError | None:
    """A composition that failed in the chosen grid file, named: its YAML, its header, the shape of its `ablation`
    node (raised by `check_shape`), an `override /<group>` of its defaults, or the failure prefixed with the file.
    `roots`: the config dirs searched (`hydra.searchpath`'s are added here). None when no grid file was chosen or
    the failure is elsewhere."""
    parsed = OverridesParser.create().parse_overrides(overrides)
    chosen = [o.value() for o in parsed if o.key_or_group == "ablation" and not o.is_sweep_override()]
    extra = [str(d) for o in parsed if o.key_or_group == "hydra.searchpath" for d in o.value() or []]
    roots = [*roots, *(Path(d.removeprefix("file://")) for d in extra if d.startswith("file://"))]
    files = [r / "ablation" / f"{chosen[-1]}.yaml" for r in roots] if chosen and chosen[-1] else []
    file = next((f for f in files if f.is_file()), None)
    if file is None:
        return None
    at = f"grid file {shown(file)}: "
    try:
        raw = OmegaConf.load(file)
    except yaml.YAMLError as err:
        return from_yaml(err)
    text = str(from_composition(e))
    tree = OmegaConf.to_container(raw, resolve=False) if isinstance(raw, DictConfig) else {}
    if not GLOBAL.match(file.read_text()):  # Hydra puts the file under `ablation.`, where its keys fail
        if "'ablation.ablation" in text or "@ablation." in text:
            return ConfigError(f"{at}its keys landed under 'ablation.' ({text}); allowed: a grid file whose "
                               "first line is `# @package _global_` (add that line)")  # fmt: skip
    elif "ablation" in tree:
        if not isinstance(tree["ablation"], Mapping):
            return ConfigError(f"{at}ablation: got {tree['ablation']!r}; allowed: a map of the grid's keys (name, "
                               "arms or factors, seeds, ...)")  # fmt: skip
        check_shape(tree["ablation"], at)
    if isinstance(e, MissingConfigException) and e.missing_cfg_file in overridden(tree.get("defaults")):
        return ConfigError(f"{at}defaults: {text}")  # Hydra names the primary config for the grid's own override
    return ConfigError(f"{at}{text}") if f"'ablation/{chosen[-1]}'" in str(e) else None


def overridden(defaults: Any) -> set[str]:
    """`<group>/<option>` of each `override /<group>: <option>` of a raw defaults list."""
    entries = [kv for d in defaults if isinstance(d, Mapping) for kv in d.items()] if isinstance(defaults, list) else []
    return {f"{k.split()[-1].strip('/')}/{v}" for k, v in entries if k.startswith("override ")}
