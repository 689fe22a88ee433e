"""The local:global ratio study's noise pilot on one GPU (`benchmarks.gpu_check`'s step `pilot`).

Two arms of `+ablation=local_global_ratio` (default: the grid's baseline r5_1 and all-global) on
`experiment=retrieval_gpu`, a few seeds each, one learning rate per arm (the experiment's; not bracketed: a noise
pilot measures the spread over seeds at one rate), trained by the project's own CLI. The runs are then read with the
project's measures and statistics (`analysis.runs.load`, `analysis.report`'s grid keys, `workbench.measures`,
`workbench.decide.summarize` and its MDEs), not re-implemented here: per arm the learning speed
`steps_to:train/answer_accuracy>=0.9` (median and seed SD), the share of seeds solved, tokens/s and MFU; for the
comparison the spread of the paired differences and the MDE at 4, 8 and 16 seeds (two-sided α 0.05, power 0.8, per
comparison, before Holm's correction) under the grid's own test (signed-rank, censored runs last) and the paired t,
and McNemar's MDE of the share solved. That is what sizes the study's seeds (docs/gpu_designs.md).
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

GRID, EXPERIMENT = "local_global_ratio", "retrieval_gpu"
THRESHOLD = "train/answer_accuracy>=0.9"
STEPS_TO, SOLVED = f"steps_to:{THRESHOLD}", f"solved:{THRESHOLD}"
EVAL_AVERAGE = 4  # solved: the mean of the last 4 logged points (64 answers each), as steps_to's running mean of 4
MDE_SEEDS = (4, 8, 16)
READ_S = 30  # of the step's budget, kept for reading the runs after the training command is stopped


@dataclass(frozen=True)
class Pilot:
    """What the pilot trains: `arms` of the grid (the first is the baseline), seeds 0..seeds-1 each, into
    `sweep_dir`, within `budget_s` (the gpu_check step's budget), `overrides` on top."""

    arms: tuple[str, ...] = ("r5_1", "global")
    seeds: int = 3
    sweep_dir: str = "multirun/gpu_check_pilot"
    budget_s: int = 500
    overrides: tuple[str, ...] = ()  # more of the training command's overrides, last (e.g. trainer.max_steps=600)

    @property
    def baseline(self) -> str:
        return self.arms[0]

    @property
    def runs(self) -> int:
        return len(self.arms) * self.seeds

    def train_argv(self) -> tuple[str, ...]:
        """The training CLI's arguments (after `python`): the grid's arms cut to `arms` and its seeds to `seeds`
        from the command line, one rate, no bracketing, no seeds added in rounds, the pilot's metric; no control and
        no margin (a 2-arm noise pilot decides nothing)."""
        return ("-m", "workbench.train", "--multirun", f"+ablation={GRID}", f"experiment={EXPERIMENT}",
                f"ablation.arm={','.join(self.arms)}", f"ablation.seeds=[{','.join(map(str, range(self.seeds)))}]",
                "ablation.lrs=[]", "ablation.bracket=false", "ablation.max_seeds=null",
                f"ablation.baseline={self.baseline}", "ablation.control=null", "ablation.margin=null",
                f'ablation.metric="{STEPS_TO}"', f"ablation.eval_average={EVAL_AVERAGE}",
                f"hydra.sweep.dir={self.sweep_dir}",
                *self.overrides)  # fmt: skip

    def probe_flags(self) -> tuple[str, ...]:
        """`benchmarks.gpu_check`'s flags that rebuild this pilot inside the step's subprocess."""
        flags = ("--pilot-arms", *self.arms, "--pilot-seeds", str(self.seeds), "--pilot-dir", self.sweep_dir)
        return (*flags, "--pilot-set", *self.overrides) if self.overrides else flags


def train(pilot: Pilot, root: Path, seconds: float) -> tuple[int | None, float]:
    """Run the pilot's training command from `root`, stopped (its process group) after `seconds`; returns its exit
    status (None: stopped) and its wall time."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))}
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, *pilot.train_argv()], cwd=root, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)  # fmt: skip
    try:
        _, err = proc.communicate(timeout=max(seconds, 1.0))
        code: int | None = proc.returncode
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        _, err = proc.communicate()
        code = None
    if code:
        print(err[-4000:], file=sys.stderr)
    return code, time.perf_counter() - start


def load_runs(sweep_dir: str | Path, arms: tuple[str, ...]) -> pd.DataFrame:
    """The pilot's runs of `arms` under `sweep_dir` (a killed run is there as incomplete), checked as
    `analysis.report` checks a grid: the completed runs of one commit (a killed run recorded none), each arm x seed
    once."""
    from analysis.report import ARM, COMPLETED, check_one_commit, check_one_study
    from analysis.runs import load

    runs = load(str(sweep_dir))
    if runs.empty or ARM not in runs:
        return pd.DataFrame(columns=[ARM, "seed", "status"])
    runs = runs[runs[ARM].isin(arms)].reset_index(drop=True)
    check_one_commit(runs[runs["status"] == COMPLETED], sweep_dir)
    check_one_study(runs, sweep_dir)
    return runs


def read(runs: pd.DataFrame, arms: tuple[str, ...]) -> pd.DataFrame:
    """One row per arm of `arms` that ran (the first is the baseline), in that order: n (completed), failed,
    steps_median, steps_sd, censored, solved (share), tokens_per_s, mfu; for the compared arms also delta (mean
    paired difference in steps, at each pair's common horizon), sd_d, n_pairs and the MDEs at MDE_SEEDS seeds:
    mde_rank_<n> (signed-rank, the grid's test of steps_to) and mde_t_<n> (paired t) in steps, mde_solved_<n>
    (McNemar's exact test, in share solved, from the baseline's share)."""
    from analysis.report import ARM, COMPLETED, measure_keys
    from workbench import decide, measures

    baseline = arms[0]
    how = measure_keys(runs)
    speed = decide.summarize(runs, baseline, STEPS_TO, smooth=how["smooth"]).set_index("arm")
    solved = decide.summarize(runs, baseline, SOLVED, eval_average=how["eval_average"]).set_index("arm")
    steps = measures.values(runs, STEPS_TO, smooth=how["smooth"])["value"]
    done = runs["status"] == COMPLETED
    by_arm = runs[done].assign(steps=steps[done]).groupby(ARM)
    out = speed[["n", "failed", "censored", "delta", "sd_d", "n_pairs"]].copy()
    out["steps_median"] = by_arm["steps"].median()
    out["steps_sd"] = speed["seed_sd"]
    out["solved"] = solved["mean"]
    for column in ("tokens_per_s", "mfu"):
        out[column] = by_arm[column].mean() if column in runs else np.nan
    out = out.reindex([a for a in arms if a in out.index])
    base_share = out.at[baseline, "solved"] if baseline in out.index else np.nan
    for n in MDE_SEEDS:
        for column in (f"mde_rank_{n}", f"mde_t_{n}", f"mde_solved_{n}"):
            out[column] = np.nan
        for arm in out.index.drop(baseline, errors="ignore"):
            sd_d = float(out.at[arm, "sd_d"])
            mdes = (decide.arm_mde("rank", sd_d, n), decide.mde(sd_d, n), decide.solved_mde(base_share, n))
            out.loc[arm, [f"mde_rank_{n}", f"mde_t_{n}", f"mde_solved_{n}"]] = mdes
    return out


def _n(x: float, digits: int = 0) -> str:
    """A number for the table; inf (no outcome over that many seeds can reject) and NaN (not measured) by name."""
    if x is None or math.isnan(x):
        return "n/a"
    return "inf" if math.isinf(x) else f"{x:,.{digits}f}"


def rows(reading: pd.DataFrame, baseline: str, seeds: int) -> list[tuple[str, str]]:
    """The markdown table's rows: (label, result) per arm, then one per compared arm for its MDEs."""
    out = []
    for arm, r in reading.iterrows():
        role = " (baseline)" if arm == baseline else ""
        out.append((f"{arm}{role}", f"{STEPS_TO}: median {_n(r['steps_median'])} steps, seed SD "
                    f"{_n(r['steps_sd'])}, {int(r['censored'])} of {int(r['n'])} censored; solved {_n(r['solved'], 2)}"
                    f" ({SOLVED}, mean of the last {EVAL_AVERAGE} logged); {_n(r['tokens_per_s'])} tokens/s, MFU "
                    f"{_n(100 * r['mfu'], 1)}%; {int(r['n'])} of {seeds} seeds completed, {int(r['failed'])} "
                    "failed"))  # fmt: skip
    seeds_at = "/".join(map(str, MDE_SEEDS))
    for arm, r in reading[reading.index != baseline].iterrows():
        mde = {k: "/".join(_n(r[f"mde_{k}_{n}"], 2 if k == "solved" else 0) for n in MDE_SEEDS)
               for k in ("rank", "t", "solved")}  # fmt: skip
        text = (f"paired Δ {_n(r['delta'])} steps over {int(r['n_pairs'])} seeds, sd_d {_n(r['sd_d'])}; MDE at "
                f"{seeds_at} seeds (α 0.05 two-sided, power 0.8): signed-rank {mde['rank']} steps, paired t "
                f"{mde['t']} steps, share solved (McNemar) {mde['solved']}")  # fmt: skip
        out.append((f"{arm} - {baseline}", text))
    return out


def report(pilot: Pilot, root: Path) -> dict[str, Any]:
    """The probe: train within the budget less READ_S (the probe's start and the reading), then read whatever runs
    completed. ok when every planned run completed; the rows say how far it got either way."""
    code, wall = train(pilot, root, pilot.budget_s - READ_S)
    runs = load_runs(root / pilot.sweep_dir, pilot.arms)
    completed = int((runs["status"] == "completed").sum()) if len(runs) else 0
    how = "stopped at the budget" if code is None else f"exit {code}"
    head = (f"{completed} of {pilot.runs} runs completed in {wall:.0f} s ({how}); runs in {pilot.sweep_dir}, "
            f"`python -m analysis.report {pilot.sweep_dir}` for the grid's report")  # fmt: skip
    if not completed:
        return {"ok": False, "result": head, "peak_gib": None, "rows": []}
    reading = read(runs, pilot.arms)
    return {"ok": code == 0 and completed == pilot.runs, "result": head, "peak_gib": None,
            "rows": rows(reading, pilot.baseline, pilot.seeds)}  # fmt: skip
