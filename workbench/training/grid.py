"""Ablation grids: turn a job's `ablation.arm` into its config, and name the run by what it computes.

A grid (ablations/<name>.yaml) lists its arms as `{dotted.key: value}` maps; Hydra sweeps `ablation.arm` x `seed`
and each job applies its arm here, so a new arm is one YAML line. The run id hashes the config the job actually
trains (arm applied, bookkeeping keys dropped) with the arm and seed, so relaunches land in the same dir.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from analysis.params import count_params
from workbench.config import ModelConfig
from workbench.presets import PRESETS

ABLATIONS_DIR = Path(__file__).resolve().parents[2] / "ablations"
# keys that do not change what a run computes, left out of its id so a relaunch with them changed still matches
NOT_IDENTITY = ("resume", "dry_run", "threads", "logger", "trainer.progress_bar", "trainer.monitor_every",
                "data.cache_dir", "distill.cache_dir", "ablation")  # fmt: skip
# keys added after grids first ran, at the value that computes what runs did before the key existed: left out of the
# id at that value, so a relaunch into a sweep dir made before the key existed still finds its finished runs
NEUTRAL = {"data.passkey_mix": 0.0, "data.passkey_digits": 5}


def resolve_arm(cfg: DictConfig) -> DictConfig:
    """A copy of `cfg` with quick mode and the selected arm applied (unchanged when no arm is selected)."""
    a = cfg.ablation
    if a.arm is None:
        return cfg
    if a.arm not in a.arms:
        raise ValueError(f"ablation.arm: got {a.arm!r}; allowed: {', '.join(a.arms)}")
    out = OmegaConf.create(OmegaConf.to_container(cfg, resolve=False))
    OmegaConf.set_struct(out, False)
    quick = dict(a.quick_overrides) if a.quick else {}
    if "model" in quick:
        out.model = PRESETS[quick.pop("model")].to_dict()
    arm = OmegaConf.to_container(a.arms[a.arm], resolve=False)  # interpolations resolve after quick mode applies
    for key, value in [*quick.items(), *arm.items()]:
        OmegaConf.update(out, key, value, merge=False, force_add=True)
    if "logger" in out:  # on W&B a grid is one group, and an arm's seeds share a job type
        out.logger.group = out.logger.get("group") or a.name
        out.logger.job_type = a.arm
    OmegaConf.set_struct(out, True)
    return out


def seeds(cfg: DictConfig) -> list[int]:
    a = cfg.ablation
    return list(a.quick_seeds if a.quick else a.seeds)


def run_id(cfg: DictConfig) -> str:
    """`<arm>_s<seed>_<10 hex digits>`: readable, and equal only for the same arm, seed and resolved config."""
    resolved = OmegaConf.to_container(resolve_arm(cfg), resolve=True)
    for key in NOT_IDENTITY:
        _parent(resolved, key).pop(key.split(".")[-1], None)
    for key, neutral in NEUTRAL.items():
        parent, leaf = _parent(resolved, key), key.split(".")[-1]
        if leaf in parent and parent[leaf] == neutral:
            del parent[leaf]
    arm = cfg.ablation.arm or "run"
    blob = json.dumps({"arm": arm, "seed": cfg.seed, "config": resolved}, sort_keys=True, default=str)
    return f"{arm}_s{cfg.seed}_{hashlib.sha256(blob.encode()).hexdigest()[:10]}"


def _parent(tree: dict[str, Any], dotted: str) -> dict[str, Any]:
    """The dict that holds `dotted`'s last part ({} where a parent is missing)."""
    for part in dotted.split(".")[:-1]:
        tree = tree.get(part, {})
    return tree


def _run_id_resolver(*, _root_: DictConfig) -> str:
    return run_id(OmegaConf.masked_copy(_root_, [k for k in _root_ if k != "hydra"]))


def _if(cond: Any, then: Any, otherwise: Any) -> Any:
    return then if cond else otherwise


def iso_flop_steps(flops: float, model: ModelConfig, tokens_per_step: int) -> int:
    """Optimiser steps at which `model` spends `flops` = 6 N D training FLOPs (N: every parameter, embeddings
    included, as analysis.scaling counts it), rounded to a whole step and at least one."""
    return max(1, round(float(flops) / (6 * count_params(model)["total"] * tokens_per_step)))


def _iso_steps_resolver(flops: float, *, _root_: DictConfig) -> int:
    model = ModelConfig.from_dict(OmegaConf.to_container(_root_.model, resolve=True))
    return iso_flop_steps(flops, model, _root_.data.batch_size * _root_.data.seq_len)


def register_resolvers() -> None:
    """`wb_*` resolvers used by conf/train.yaml and the grids (sweep values, dir names, window sizes, steps)."""
    resolvers = {
        "wb_run_id": _run_id_resolver,
        "wb_if": _if,
        "wb_join": lambda xs: ",".join(str(x) for x in xs),
        "wb_keys": lambda d: ",".join(str(k) for k in d),
        "wb_div": lambda a, b: int(a) // int(b),
        "wb_mul": lambda a, b: int(a) * int(b),
        "wb_iso_steps": _iso_steps_resolver,
    }
    for name, fn in resolvers.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)
