"""What a grid's next round adds, read from the results of the jobs so far (`workbench.decide` has the statistics):

1. bracketing first: an arm (the baseline included) whose best rate on the selection split sits at an edge of the
   rates it tried gets the next rate beyond that edge, at every one of its seeds (all seeds of an arm share its
   rates), until its optimum is interior, the rate beyond diverged, or `ablation.lr_bounds` is reached; with
   `ablation.to_divergence` (a stability grid) every arm also gets the rate above its top one until that diverges
   or the bound is reached (`decide.divergence_edges`);
2. then seeds until decided (`ablation.max_seeds`): each look decides the arms at the look's alpha
   (`decide.look_alpha`: alpha split over the planned looks, Holm across arms); arms still `inconclusive` get
   `ablation.seed_step` more seeds at each of their rates, and the baseline every seed an arm has, until decided or
   at `max_seeds`.
A round is a list of axis combinations ({ablation.arm, seed, optim.lr}) and the reason it was added.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from omegaconf import DictConfig

from workbench import decide, measures
from workbench.training.grid import flatten
from workbench.training.results import RESULTS_FILE
from workbench.training.sweep import ARM, LR, SEED, SweepJob

STATE_FILE = "sweep.json"  # the sweep's rounds and looks: analysis.report reads the alpha it must decide at


@dataclass
class Settings:
    """The grid's round keys, read once from its `ablation` config."""

    bracket: bool
    to_divergence: bool
    bounds: tuple[float, float]
    step: float
    first_seeds: int
    seed_step: int
    max_seeds: int | None
    alpha: float
    baseline: str | None
    control: str | None
    margin: float | None
    metric: str
    pilot_seeds: int | None
    underpowered: str
    smooth: int
    eval_average: int | None

    @classmethod
    def of(cls, ablation: DictConfig, seeds: list[Any], lrs: list[float]) -> Settings:
        first, (lo, hi) = len(seeds), ablation.lr_bounds
        bracket = bool(ablation.bracket) and len(lrs) > 0
        return cls(bracket, bracket and bool(ablation.to_divergence), (float(lo), float(hi)),
                   decide.log_step(sorted(lrs)) if lrs else 3.0, first, int(ablation.seed_step or first),
                   None if ablation.max_seeds is None else int(ablation.max_seeds), decide.ALPHA, ablation.baseline,
                   ablation.control, None if ablation.margin is None else float(ablation.margin),
                   str(ablation.metric), ablation.pilot_seeds, str(ablation.underpowered), int(ablation.smooth),
                   None if ablation.eval_average is None else int(ablation.eval_average))  # fmt: skip

    @property
    def looks(self) -> list[int]:
        """The seed counts at which arms are decided (the first round's, then every `seed_step` to `max_seeds`)."""
        return decide.planned_looks(self.first_seeds, self.seed_step, self.max_seeds)

    @property
    def max_looks(self) -> int:
        return len(self.looks)


def read_results(run_dir: Path) -> dict[str, Any] | None:
    path = run_dir / RESULTS_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def runs_frame(jobs: list[SweepJob]) -> pd.DataFrame:
    """One row per job: its arm, seed, rate and run dir (where a curve measure reads metrics.csv), and its
    results.json's numbers (status "incomplete" without one)."""
    rows = []
    for job in jobs:
        cfg = job.run.cfg
        results = read_results(job.run.run_dir) or {"status": "incomplete"}
        flat = {k: v for k, v in flatten(results).items() if not isinstance(v, dict | list)}
        rows.append({**flat, ARM: cfg.ablation.arm, SEED: int(cfg.seed), LR: float(cfg.optim.lr),
                     "model.vocab_size": int(cfg.model.vocab_size), "run_dir": str(job.run.run_dir)})  # fmt: skip
    return pd.DataFrame(rows)


def _seeds(runs: pd.DataFrame, arm: str) -> list[int]:
    return sorted(runs.loc[runs[ARM] == arm, SEED].unique().tolist())


def _rates(runs: pd.DataFrame, arm: str) -> list[float]:
    return sorted(runs.loc[runs[ARM] == arm, LR].unique().tolist())


def _brackets(runs: pd.DataFrame, s: Settings, *, bracket: bool) -> pd.DataFrame:
    """decide.brackets with the rates picked as the report picks them (a learning-speed measure on itself)."""
    measured = measures.values(runs, s.metric, smooth=s.smooth, eval_average=s.eval_average)["value"]
    runs = runs.assign(**{s.metric: measured})
    return decide.brackets(runs, bounds=s.bounds, step=s.step, bracket=bracket,
                           selection=decide.selection_metric(runs, s.metric))  # fmt: skip


def bracketing(runs: pd.DataFrame, s: Settings) -> tuple[list[dict[str, str]], str]:
    """The next rates of every unbracketed arm, and with `to_divergence` of every arm whose top rate did not diverge
    (its divergence edge not yet found), at each of its seeds; and why."""
    table = _brackets(runs, s, bracket=True)
    added, why = {}, []
    for row in table.to_dict("records"):
        if row["bracketed"] or row["next_lr"] is None or pd.isna(row["next_lr"]):
            continue
        arm, lr = row["arm"], float(row["next_lr"])
        side = "top" if lr > row["best_lr"] else "bottom"
        why.append(f"{arm}'s best rate {row['best_lr']:g} is the {side} of those tried: adding {lr:g}")
        added[arm, lr] = True
    if s.to_divergence:
        for row in decide.divergence_edges(runs, bounds=s.bounds, step=s.step).to_dict("records"):
            arm, lr = row["arm"], row["next_lr"]
            if pd.notna(lr) and (arm, float(lr)) not in added:
                why.append(f"{arm}'s top rate {row['top_lr']:g} did not diverge: adding {lr:g}")
                added[arm, float(lr)] = True
    combos = [{ARM: arm, SEED: str(seed), LR: str(lr)} for arm, lr in added for seed in _seeds(runs, arm)]
    return combos, "; ".join(why)


def decisions(runs: pd.DataFrame, s: Settings, look: int) -> pd.DataFrame:
    """The arms' decisions at look `look` (1-based), each look at alpha / the planned looks; a call made at an earlier
    look stays (`decide.summarize` replays the looks)."""
    done = runs[runs["status"].isin(["completed", "failed"])]
    table = _brackets(done, s, bracket=s.bracket)
    return decide.summarize(done, s.baseline or str(done[ARM].iloc[0]), s.metric, margin=s.margin,
                            control=s.control, alpha=decide.look_alpha(s.alpha, s.max_looks), looks=s.looks[:look],
                            bracketed=dict(zip(table["arm"], table["bracketed"], strict=True)), smooth=s.smooth,
                            eval_average=s.eval_average)  # fmt: skip


def more_seeds(runs: pd.DataFrame, s: Settings, look: int) -> tuple[list[dict[str, str]], str]:
    """After look `look`: `seed_step` more seeds for every inconclusive arm under `max_seeds` (at each of its rates),
    and for the baseline every seed those arms will have; and why."""
    if s.max_seeds is None or look >= s.max_looks:
        return [], ""
    table = decisions(runs, s, look)
    base = s.baseline or str(runs[ARM].iloc[0])
    combos, grown = [], []
    for row in table.to_dict("records"):
        arm = row["arm"]
        have = _seeds(runs, arm)
        if arm == base or row["decision"] != "inconclusive" or len(have) >= s.max_seeds:
            continue
        new = range(max(have) + 1, max(have) + 1 + min(s.seed_step, s.max_seeds - len(have)))
        grown.append(f"{arm} inconclusive at {len(have)} seeds (look {look} of {s.max_looks})")
        combos += [{ARM: arm, SEED: str(seed), LR: str(lr)} for seed in new for lr in _rates(runs, arm)]
    if combos:
        needed = sorted({int(c[SEED]) for c in combos} - set(_seeds(runs, base)))
        combos += [{ARM: base, SEED: str(seed), LR: str(lr)} for seed in needed for lr in _rates(runs, base)]
    return combos, "; ".join(grown)


def worst_case_jobs(arms: int, seeds: int, lrs: list[float], s: Settings) -> int:
    """Jobs if every round runs to its cap: every arm at `max_seeds` seeds and at every rate out to both bounds."""
    n_rates = max(1, len(lrs))
    if s.bracket and lrs:
        n_rates += max(0, math.ceil(math.log(s.bounds[1] / max(lrs)) / math.log(s.step) - 1e-9))
        n_rates += max(0, math.ceil(math.log(min(lrs) / s.bounds[0]) / math.log(s.step) - 1e-9))
    return arms * max(seeds, s.max_seeds or 0) * n_rates


def write_state(directory: Path, s: Settings, looks: int, rounds: list[dict[str, Any]]) -> None:
    state = {"looks": looks, "max_looks": s.max_looks, "alpha": s.alpha, "bracket": s.bracket,
             "lr_bounds": list(s.bounds), "lr_step": s.step, "rounds": rounds}  # fmt: skip
    directory.mkdir(parents=True, exist_ok=True)
    (directory / STATE_FILE).write_text(json.dumps(state, indent=1))


def pilot_combos(combos: list[dict[str, str]], s: Settings, k: int) -> list[dict[str, str]]:
    """The first round's jobs of the baseline (and the control) at the grid's first `k` seeds: the pilot."""
    seeds = sorted({int(c[SEED]) for c in combos if SEED in c})[:k]
    arms = {a for a in (s.baseline, s.control) if a}
    return [c for c in combos if c.get(ARM) in arms and SEED in c and int(c[SEED]) in seeds]


def noise(runs: pd.DataFrame, s: Settings) -> tuple[float, int]:
    """The baseline's seed-to-seed SD of the grid's metric (pooled over its rates, each with 2 or more completed
    seeds) and the number of runs it rests on; NaN when fewer than 2 seeds completed at any rate."""
    base = runs[(runs[ARM] == s.baseline) & (runs["status"] == "completed")]
    if base.empty:
        return float("nan"), 0
    base = base.assign(value=measures.values(base, s.metric, smooth=s.smooth, eval_average=s.eval_average)["value"])
    groups = [g["value"].astype(float) for _, g in base.groupby(LR) if g["value"].notna().sum() >= 2]
    if not groups:
        return float("nan"), 0
    pooled = sum(g.var(ddof=1) * (len(g) - 1) for g in groups) / sum(len(g) - 1 for g in groups)
    return float(math.sqrt(pooled)), sum(len(g) for g in groups)


def power_lines(runs: pd.DataFrame, s: Settings, arms: list[str], seeds: int) -> tuple[list[str], bool]:
    """Each arm's MDE at the grid's seeds and at `max_seeds`, and the seeds its margin needs, from the baseline's
    noise (differences of independent seeds: sd_d = sqrt(2) x the seed SD, conservative where seeds pair); and whether
    the design cannot decide at its margin even at its cap."""
    sd, n_runs = noise(runs, s)
    if not math.isfinite(sd):
        return ["power: no finished baseline runs at 2 or more seeds yet (the pilot measures them)"], False
    sd_d, alpha = math.sqrt(2.0) * sd, decide.look_alpha(s.alpha, s.max_looks)
    cap = s.max_seeds or seeds
    needed = None
    if s.margin:
        needed = next((n for n in range(2, 1001) if decide.mde(sd_d, n, alpha) <= s.margin), None)
    lines = [f"power: the baseline's seed SD of {s.metric} is {sd:.4g} ({n_runs} runs), so sd_d ~ {sd_d:.4g}; MDE at "
             f"alpha {alpha:.3g} per look, 80% power, before Holm over the arms"]  # fmt: skip
    for arm in arms:
        if arm == s.baseline:
            continue
        text = f"  {arm}: MDE {decide.mde(sd_d, seeds, alpha):.4g} at {seeds} seeds, {decide.mde(sd_d, cap, alpha):.4g}"
        text += f" at {cap}" + (f"; the margin {s.margin:g} needs {needed or '> 1000'} seeds" if s.margin else "")
        lines.append(text)
    return lines, bool(s.margin) and (needed is None or needed > cap)
