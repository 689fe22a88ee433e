"""What the reach studies' notebooks (local_global_ratio and window_size on experiment=reach_cpu) read beside
`analysis.report`'s decisions, from the same runs: each arm's runs at the rate the report picked, the steps each took
to answer 0.9 of the retrieval questions, its final accuracy per distance bucket, its KV cache against all-global's,
the learning speed vs KV cache figure; and the arithmetic of sizing a study that was not run: the paired spread a
recorded interval implies, the seeds a margin needs under the project's power function, H100-hours from 6ND.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from scipy import stats

from analysis.grid_notebook import model_config
from workbench import measures
from workbench.accounting import kv_cache_bytes
from workbench.decide import ALPHA, ARM, COMPLETED, LR, POWER, mde

STEPS_TO = "steps_to:train/answer_accuracy>=0.9"  # learning speed in steps, from the curve the auc is read from
BUCKET = "retrieval.accuracy_by_distance."  # results.json's final accuracy per distance bucket, flattened by load
COARSE = 5.0  # a control effect above this multiple of the margin is coarse (analysis.report.cautions says so)
H100_BF16 = 989e12  # H100 SXM dense bf16 FLOP/s (datasheet), the peak an assumed MFU is taken of


def at_best_rates(runs: pd.DataFrame, summary: pd.DataFrame) -> pd.DataFrame:
    """The completed runs of each arm at the learning rate `summary` (analysis.report's table) picked for it: the
    runs its decision rests on."""
    best = dict(zip(summary["arm"], summary["best_lr"], strict=True))
    done = runs[runs["status"] == COMPLETED]
    return done[np.isclose(done[LR].astype(float), done[ARM].map(best).astype(float))].reset_index(drop=True)


def noise_table(summary: pd.DataFrame, margin: float, control: str | None) -> pd.DataFrame:
    """Per arm, before any reading: seeds, the seed SD of the metric, the paired spread sd_d against the baseline,
    the pairs and the MDE at them, and (the control's row) its effect as a multiple of the margin and whether that is
    coarse (above COARSE x)."""
    s = summary.set_index("arm")
    out = pd.DataFrame({"seeds": s["n"], "seed_sd": s["seed_sd"], "sd_d": s["sd_d"].where(~s["baseline"]),
                        "pairs": s["n_pairs"], "mde": s["mde"], "test": s["test"]})  # fmt: skip
    out["control / margin"] = np.nan
    if control is not None and control in s.index:
        out.loc[control, "control / margin"] = abs(s.at[control, "delta"]) / margin
    out["coarse"] = out["control / margin"] > COARSE
    return out


def steps_to_table(runs: pd.DataFrame, metric: str = STEPS_TO, smooth: int = measures.SMOOTH) -> pd.DataFrame:
    """Per arm over `runs` (one rate each: at_best_rates): the steps to the threshold (median, min, max over seeds;
    a run that never reaches it counts at its last logged step) and how many runs were censored so."""
    v = measures.values(runs, metric, smooth=smooth)
    v[ARM] = runs[ARM]
    g = v.groupby(ARM, sort=False)
    return pd.DataFrame({"runs": g["value"].count(), "median": g["value"].median(), "min": g["value"].min(),
                         "max": g["value"].max(), "censored": g["censored"].sum().astype(int)})  # fmt: skip


def distance_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Per arm over `runs`: the mean over seeds of the final answer accuracy in each distance bucket (results.json's
    retrieval.accuracy_by_distance), buckets nearest first."""
    cols = [c for c in runs.columns if c.startswith(BUCKET)]
    if not cols:
        raise ValueError("runs: no retrieval.accuracy_by_distance in their results.json; allowed: data=retrieval runs")
    cols.sort(key=lambda c: int(c[len(BUCKET) :].split("-")[0]))
    table = runs.groupby(ARM, sort=False)[cols].mean()
    return table.rename(columns=lambda c: c[len(BUCKET) :])


def all_global_kv(run_dir: str | Path, context: int) -> int:
    """The KV cache at `context` tokens of the run's model with every layer global: the reference a layout's saving
    is stated against (workbench.accounting, bf16, batch 1, as results.json's kv_cache_bytes)."""
    return kv_cache_bytes(model_config(run_dir).replace(layer_pattern="global"), context)


def kv_table(summary: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """Per arm: its KV cache at results.json's kv_reference_context and that over all-global's for the same model."""
    first = runs.drop_duplicates(ARM).set_index(ARM)
    out = summary.set_index("arm")[["kv_bytes"]].copy()
    out["context"] = first.loc[out.index, "kv_reference_context"].astype(int)
    out["all-global bytes"] = [all_global_kv(first.at[a, "run_dir"], out.at[a, "context"]) for a in out.index]
    out["vs all-global"] = out["kv_bytes"] / out["all-global bytes"]
    return out


def speed_vs_kv_figure(summary: pd.DataFrame, steps: pd.DataFrame, metric: str, title: str = "") -> Figure:
    """Left: the decision metric (mean and 95% interval over seeds, higher = learned sooner) against the KV cache per
    arm; right: the median steps to the threshold (bars: min to max over seeds) against the same."""
    s = summary.set_index("arm")
    arms = [a for a in s.index if a in steps.index]
    kv = s.loc[arms, "kv_bytes"].to_numpy(float) / 2**20
    fig = Figure(figsize=(9, 3.4), dpi=72)
    left, right = fig.subplots(1, 2)
    y = s.loc[arms, "mean"].to_numpy(float)
    err = np.vstack([y - s.loc[arms, "ci_lo"].fillna(s.loc[arms, "mean"]), s.loc[arms, "ci_hi"].fillna(
        s.loc[arms, "mean"]) - y])  # fmt: skip
    left.errorbar(kv, y, yerr=np.abs(err), fmt="o", capsize=3)
    med = steps.loc[arms, "median"].to_numpy(float)
    span = np.vstack([med - steps.loc[arms, "min"], steps.loc[arms, "max"] - med]).astype(float)
    right.errorbar(kv, med, yerr=span, fmt="s", capsize=3, color="C1")
    for ax in (left, right):
        for xi, yi, arm in zip(kv, y if ax is left else med, arms, strict=True):
            ax.annotate(arm, (xi, yi), fontsize="small", xytext=(4, 4), textcoords="offset points")
        ax.set(xscale="log", xlabel="KV cache at 32k tokens (MiB, bf16, batch 1)")
        ax.grid(alpha=0.3, which="both")
    left.set(ylabel=f"{metric} (higher: sooner)", title=title)
    right.set(ylabel=f"{STEPS_TO.split(':', 1)[1]}: steps", title="steps to 0.9 (median, min-max)")
    fig.tight_layout()
    return fig


def sd_from_interval(lo: float, hi: float, n: int, level: float = 0.95) -> float:
    """The SD of n paired differences that a recorded t-interval [lo, hi] of their mean implies."""
    return (hi - lo) / 2 / stats.t.ppf((1 + level) / 2, n - 1) * np.sqrt(n)


def sd_from_p(delta: float, p: float, n: int) -> float:
    """The SD of n paired differences that a recorded mean `delta` and two-sided paired-t p imply."""
    return abs(delta) * np.sqrt(n) / stats.t.isf(p / 2, n - 1)


def seeds_needed(sd_d: float, margin: float, alpha: float = ALPHA, power: float = POWER, most: int = 10_000
                 ) -> int | None:  # fmt: skip
    """The fewest paired seeds at which the paired t-test at `alpha` detects |Δ| = `margin` with `power`
    (workbench.decide.mde, the project's power function, as the sweeper's power lines use it); None above `most`."""
    return next((n for n in range(2, most + 1) if mde(sd_d, n, alpha, power) <= margin), None)


def train_hours(params: float, tokens: float, mfu: float, peak: float = H100_BF16) -> float:
    """GPU-hours of one training run at 6 x params x tokens FLOPs (attention's context term left out) and `mfu`."""
    return 6 * params * tokens / (peak * mfu) / 3600


def study_hours(per_run: Mapping[str, float], rates: int, seeds: int) -> float:
    """GPU-hours of a grid whose arms cost `per_run` hours each, at `rates` learning rates x `seeds` seeds per arm."""
    return sum(per_run.values()) * rates * seeds
