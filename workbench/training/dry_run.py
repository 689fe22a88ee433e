"""`dry_run=true`: what a grid will cost, arm by arm, before anything trains; and which arms are invalid.

The sweep is expanded exactly as Hydra's basic sweeper does (the grid's `hydra.sweeper.params` first, then the
command line), each job's config is composed and its arm applied; seeds of one arm share one row.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf

from analysis.flops import training_flops
from analysis.kv_cache import kv_cache_bytes
from analysis.params import count_params
from analysis.presets_cli import print_table
from workbench.config import ModelConfig
from workbench.model import build_model
from workbench.training.config_store import register_presets
from workbench.training.grid import resolve_arm
from workbench.training.overrides import CONF_DIR, VERSION_BASE


@dataclass
class ArmCost:
    arm: str
    seeds: list[int]
    params: dict[str, int]
    flops_per_token: float  # training (forward + backward), window-aware
    kv_bytes: int
    step_s: float
    steps: int
    tokens_per_step: int

    @property
    def wall_s(self) -> float:
        return self.step_s * self.steps * len(self.seeds)

    @property
    def flops(self) -> float:
        return self.flops_per_token * self.tokens_per_step * self.steps * len(self.seeds)


def expand(overrides: list[str]) -> list[DictConfig]:
    """One composed config per job of the multirun, arm applied."""
    register_presets()
    parser = OverridesParser.create()
    fixed = [o.input_line for o in parser.parse_overrides(overrides) if not o.is_sweep_override()]
    with initialize_config_dir(str(CONF_DIR), version_base=VERSION_BASE):
        base = compose("train", overrides=fixed, return_hydra_config=True)
        params = OmegaConf.to_container(base.hydra.sweeper.params or {}, resolve=True)
        lines = [f"{k}={v}" for k, v in params.items()] + overrides
        jobs = BasicSweeper.split_arguments(parser.parse_overrides(lines), None)[0]
        return [compose("train", overrides=[o for o in job if not o.startswith("hydra")]) for job in jobs]


def measure_step_s(model_cfg: ModelConfig, batch_size: int, seq_len: int, precision: str, steps: int = 2) -> float:
    """Seconds per optimiser step (forward, backward, AdamW) on random tokens, after one warmup step."""
    model = build_model(model_cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randint(0, model_cfg.vocab_size, (batch_size, seq_len))
    dtype = torch.bfloat16 if precision.startswith("bf16") else None
    times = []
    for _ in range(steps + 1):
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
            loss = F.cross_entropy(model(x).float().flatten(0, 1), x.flatten())
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - start)
    return sum(times[1:]) / steps


def arm_cost(cfg: DictConfig, arm: str, seeds: list[int]) -> ArmCost:
    model_cfg = ModelConfig.from_dict(OmegaConf.to_container(cfg.model, resolve=True))
    seq_len, batch = int(cfg.data.seq_len), int(cfg.data.batch_size) * int(cfg.trainer.accumulate_grad_batches)
    return ArmCost(
        arm=arm, seeds=seeds, params=count_params(model_cfg),
        flops_per_token=training_flops(model_cfg, seq_len) / seq_len,
        kv_bytes=kv_cache_bytes(model_cfg, int(cfg.kv_reference_context)),
        step_s=measure_step_s(model_cfg, batch, seq_len, str(cfg.trainer.precision)),
        steps=int(cfg.trainer.max_steps), tokens_per_step=batch * seq_len,
    )  # fmt: skip


def dry_run(overrides: list[str]) -> int:
    """Print the cost table and the invalid arms; 1 if any arm is invalid, else 0. Trains nothing."""
    arms: dict[str, tuple[DictConfig, list[int]]] = {}
    for cfg in expand(overrides):
        label = cfg.ablation.arm or "run"
        arms.setdefault(label, (cfg, []))[1].append(int(cfg.seed))
    costs, invalid = [], []
    for label, (cfg, seeds) in arms.items():
        try:
            costs.append(arm_cost(resolve_arm(cfg), label, seeds))
        except ValueError as e:
            invalid.append((label, str(e)))
    context = arms and next(iter(arms.values()))[0].kv_reference_context
    rows = [[c.arm, c.params["total"], c.params["non_embedding"], f"{c.flops_per_token:.4g}", c.kv_bytes,
             f"{c.step_s:.3f}", c.steps, ",".join(map(str, c.seeds)), f"{c.wall_s / 60:.1f}"]
            for c in costs]  # fmt: skip
    print(f"dry run: {len(costs)} valid arm(s), {len(invalid)} invalid; nothing is trained")
    print_table(["arm", "params", "non-emb params", "train FLOPs/token", f"KV bytes @{context}", "step s", "steps",
                 "seeds", "est. min"], rows)  # fmt: skip
    runs = sum(len(c.seeds) for c in costs)
    total_flops, total_s = sum(c.flops for c in costs), sum(c.wall_s for c in costs)
    print(f"grid total: {runs} runs, {total_flops:.4g} training FLOPs, est. {total_s / 60:.1f} min sequential")
    for label, error in invalid:
        print(f"INVALID arm {label}: {error}")
    return 1 if invalid else 0
