"""`dry_run=true`: what a plan costs, job by job (dependencies included), before anything trains: the accounting's
parameters, training FLOPs per token and KV bytes, and a time at this machine's training FLOP/s
(`workbench.timing.achieved_flops`); docs/grids.md, "Dry runs", says how rough it is.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from omegaconf import OmegaConf
from tabulate import tabulate

from workbench.accounting import kv_cache_bytes, param_counts, training_flops
from workbench.config import ModelConfig
from workbench.precision import resolve_precision
from workbench.timing import CACHE, REFERENCE, achieved_flops
from workbench.training.plan import Job


@dataclass
class JobCost:
    job: Job
    params: dict[str, int]
    flops_per_token: float  # training (forward + backward), attended pairs
    kv_bytes: int
    steps: int
    tokens_per_step: int
    precision: str

    @property
    def flops(self) -> float:
        return self.flops_per_token * self.tokens_per_step * self.steps


def job_cost(job: Job) -> JobCost:
    cfg = job.cfg
    model = ModelConfig.from_dict(OmegaConf.to_container(cfg.model, resolve=True))
    seq_len = int(cfg.data.get("seq_len") or 2 * (cfg.data.num_pairs + cfg.data.num_queries))
    batch = int(cfg.data.batch_size) * int(cfg.trainer.accumulate_grad_batches)
    precision, _ = resolve_precision(str(cfg.trainer.precision), str(cfg.trainer.accelerator))
    return JobCost(job, param_counts(model), training_flops(model, seq_len) / seq_len,
                   kv_cache_bytes(model, int(cfg.kv_reference_context)), int(cfg.trainer.max_steps), batch * seq_len,
                   precision)  # fmt: skip


def dry_run(plans: list[list[Job]]) -> int:
    """Print the cost table of every job of every plan (a shared dependency once); trains nothing."""
    costs, seen = [], set()
    for jobs in plans:
        for job in jobs:
            if job.run_dir not in seen:
                seen.add(job.run_dir)
                costs.append(job_cost(job))
    device = "cuda" if torch.cuda.is_available() else "cpu"
    rates = {p: achieved_flops(device, p) for p in sorted({c.precision for c in costs})}
    rows = [[c.job.what, c.job.run_dir.name, c.params["total"], c.params["non_embedding"], f"{c.flops_per_token:.4g}",
             c.kv_bytes, c.steps, f"{c.flops:.3g}", f"{c.flops / rates[c.precision][0] / 60:.1f}"]
            for c in costs]  # fmt: skip
    context = plans[0][-1].cfg.kv_reference_context if plans else 0
    print(f"dry run: {len(costs)} job(s) in {len(plans)} plan(s), dependencies included; nothing is trained")
    print(tabulate(rows, ["job", "run dir", "params", "non-emb params", "train FLOPs/token", f"KV bytes @{context}",
                          "steps", "train FLOPs", "est. min"], intfmt=","))  # fmt: skip
    total = sum(c.flops / rates[c.precision][0] for c in costs)
    print(f"total: {sum(c.flops for c in costs):.4g} training FLOPs, est. {total / 60:.1f} min sequential")
    for rate, key in rates.values():
        print(
            f"time estimate: FLOPs / {rate / 1e9:.2f} GFLOP/s, the rate of one {REFERENCE['preset']} training step "
            f"({REFERENCE['batch_size']} x {REFERENCE['seq_len']} tokens) measured on {key} (cached in {CACHE})"
        )
    return 0
