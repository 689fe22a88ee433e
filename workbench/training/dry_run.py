"""`dry_run=true`: what a plan costs, job by job (dependencies included), before anything trains: the accounting's
parameters, training FLOPs per token, KV bytes, an on-policy run's decode FLOPs per sampled token (its sampling is
in the job's FLOPs), and a time at this machine's training FLOP/s
(`workbench.timing.achieved_flops`); docs/grids.md, "Dry runs", says how rough it is.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from omegaconf import OmegaConf
from tabulate import tabulate

from workbench.accounting import generation_flops, kv_cache_bytes, on_policy_row_flops, param_counts, training_flops
from workbench.config import ModelConfig
from workbench.precision import resolve_precision
from workbench.timing import CACHE, REFERENCE, achieved_flops
from workbench.training.plan import Job
from workbench.training.schema import training_seq_len


@dataclass
class JobCost:
    job: Job
    params: dict[str, int]
    flops_per_token: float  # training (forward + backward), attended pairs
    kv_bytes: int
    steps: int
    tokens_per_step: int
    precision: str
    flops_per_step: float  # the student's: training, and sampling the on-policy rows (the teacher is not counted)
    decode_flops_per_token: float | None = None  # on-policy distillation: generation FLOPs per sampled token

    @property
    def flops(self) -> float:
        return self.flops_per_step * self.steps


def job_cost(job: Job) -> JobCost:
    cfg = job.cfg
    model = ModelConfig.from_dict(OmegaConf.to_container(cfg.model, resolve=True))
    seq_len = training_seq_len(cfg.data)
    micro_batch, accumulate = int(cfg.data.batch_size), int(cfg.trainer.accumulate_grad_batches)
    precision, _ = resolve_precision(str(cfg.trainer.precision), str(cfg.trainer.accelerator))
    d, rows, decode = cfg.distill, 0, None
    if d.kind == "on_policy":  # the first round(mix x batch) rows of each micro-batch (per rank under DDP)
        rows = round(d.on_policy_mix * micro_batch)
        decode = generation_flops(model, d.prompt_len, d.new_tokens) / d.new_tokens
    per_micro_batch = (micro_batch - rows) * training_flops(model, seq_len)
    if rows:
        per_micro_batch += rows * on_policy_row_flops(model, d.prompt_len, d.new_tokens)
    return JobCost(job, param_counts(model), training_flops(model, seq_len) / seq_len,
                   kv_cache_bytes(model, int(cfg.kv_reference_context)), int(cfg.trainer.max_steps),
                   micro_batch * accumulate * seq_len, precision, per_micro_batch * accumulate, decode)  # fmt: skip


def _rate(precision: str) -> tuple[float, str]:
    """This machine's training FLOP/s at `precision` (measured once, cached) and where it was measured."""
    return achieved_flops("cuda" if torch.cuda.is_available() else "cpu", precision)


def estimated_seconds(job: Job) -> float:
    cost = job_cost(job)
    return cost.flops / _rate(cost.precision)[0]


def worst_case(costs: list[JobCost], n_jobs: int) -> None:
    """The price if every round runs to its cap (`n_jobs` jobs, priced at the first round's mean job)."""
    mean = sum(c.flops for c in costs) / len(costs)
    seconds = sum(c.flops / _rate(c.precision)[0] for c in costs) / len(costs)
    print(f"worst case, every round to its cap (each arm bracketed out to ablation.lr_bounds, every arm at "
          f"ablation.max_seeds): {n_jobs} jobs, {n_jobs * mean:.4g} FLOPs, est. {n_jobs * seconds / 60:.1f} "
          "min sequential")  # fmt: skip


def dry_run(plans: list[list[Job]], worst_case_jobs: int | None = None) -> int:
    """Print the cost table of every job of every plan (a shared dependency once), the first round's total and,
    for a grid with rounds, the worst case; trains nothing."""
    costs, seen = [], set()
    for jobs in plans:
        for job in jobs:
            if job.run_dir not in seen:
                seen.add(job.run_dir)
                costs.append(job_cost(job))
    rates = {p: _rate(p) for p in sorted({c.precision for c in costs})}
    rows = [[c.job.what, c.job.run_dir.name, c.params["total"], c.params["non_embedding"], f"{c.flops_per_token:.4g}",
             c.kv_bytes, "-" if c.decode_flops_per_token is None else f"{c.decode_flops_per_token:.4g}", c.steps,
             f"{c.flops:.3g}", f"{c.flops / rates[c.precision][0] / 60:.1f}"] for c in costs]  # fmt: skip
    context = plans[0][-1].cfg.kv_reference_context if plans else 0
    print(f"dry run: {len(costs)} job(s) in {len(plans)} plan(s), dependencies included; nothing is trained")
    print(tabulate(rows, ["job", "run dir", "params", "non-emb params", "train FLOPs/token",
                          f"KV bytes @{context}", "decode FLOPs/sampled token", "steps", "FLOPs", "est. min"],
                   intfmt=","))  # fmt: skip
    total = sum(c.flops / rates[c.precision][0] for c in costs)
    first = "first round (the grid as written)" if worst_case_jobs is not None else "total"
    print(f"{first}: {sum(c.flops for c in costs):.4g} FLOPs, est. {total / 60:.1f} min sequential")
    if worst_case_jobs is not None and costs:
        worst_case(costs, worst_case_jobs)
    for rate, key in rates.values():
        print(
            f"time estimate: FLOPs / {rate / 1e9:.2f} GFLOP/s, the rate of one {REFERENCE['preset']} training step "
            f"({REFERENCE['batch_size']} x {REFERENCE['seq_len']} tokens) measured on {key} (cached in {CACHE})"
        )
    return 0
