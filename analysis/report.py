"""`python -m analysis.report <multirun dir>`: one ablation grid's statistics and figures.

Writes summary.csv and summary.md (per arm: mean, std and 95% t-interval over seeds; Δ vs the baseline arm with
a paired t-test over the seeds both arms completed; failed arms listed) and PNG/SVG figures: loss curves per arm,
a forest plot of Δ, and val loss vs KV bytes. Runs are read through `analysis.runs.load`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from analysis import plots
from analysis.runs import load, load_metrics

ARM, METRIC = "ablation.arm", "val_loss"


def t_interval(values: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Student-t interval of the mean; NaN with fewer than 2 values."""
    n = len(values)
    if n < 2:
        return float("nan"), float("nan")
    half = stats.t.ppf(0.5 + level / 2, n - 1) * values.std(ddof=1) / np.sqrt(n)
    return float(values.mean() - half), float(values.mean() + half)


def paired(arm: pd.DataFrame, base: pd.DataFrame, metric: str) -> dict[str, float]:
    """Δ = arm - baseline paired by seed: mean, 95% interval, paired t-test p-value."""
    both = arm[["seed", metric]].merge(base[["seed", metric]], on="seed", suffixes=("", "_base"))
    d = (both[metric] - both[f"{metric}_base"]).to_numpy(float)
    lo, hi = t_interval(d)
    p = float(stats.ttest_rel(both[metric], both[f"{metric}_base"]).pvalue) if len(d) >= 2 and d.std() > 0 else np.nan
    return {"delta": float(d.mean()) if len(d) else np.nan, "delta_lo": lo, "delta_hi": hi, "p_value": p,
            "n_pairs": len(d)}  # fmt: skip


def summarize(runs: pd.DataFrame, baseline: str, metric: str = METRIC) -> pd.DataFrame:
    done = runs[runs["status"] == "completed"]
    base = done[done[ARM] == baseline]
    rows = []
    for arm, g in runs.groupby(ARM, sort=False):
        ok = done[done[ARM] == arm]
        values = ok[metric].to_numpy(float)
        lo, hi = t_interval(values)
        rows.append({"arm": arm, "baseline": arm == baseline, "n": len(values),
                     "failed": int((g["status"] != "completed").sum()),
                     "mean": values.mean() if len(values) else np.nan,
                     "std": values.std(ddof=1) if len(values) > 1 else np.nan, "ci_lo": lo, "ci_hi": hi,
                     **paired(ok, base, metric),
                     "kv_bytes": ok["kv_cache_bytes"].mean() if len(ok) else np.nan,
                     "params": ok["params.total"].mean() if len(ok) else np.nan})  # fmt: skip
    return pd.DataFrame(rows)


def failures(runs: pd.DataFrame) -> pd.DataFrame:
    """Runs that did not complete, with their error and, for a NaN/inf loss, the step it appeared at."""
    bad = runs[runs["status"] != "completed"]
    return bad.reindex(columns=[ARM, "seed", "status", "failed_step", "error", "run_dir"])


def figures(runs: pd.DataFrame, summary: pd.DataFrame, out: Path) -> list[Path]:
    done = runs[runs["status"] == "completed"]
    curves = {}
    for arm, g in done.groupby(ARM, sort=False):  # the mean curve over seeds, step by step
        curves[arm] = pd.concat([load_metrics(d) for d in g["run_dir"]]).groupby("step", as_index=False).mean()
    deltas = summary[~summary["baseline"] & summary["delta"].notna()]
    deltas = deltas.assign(delta_lo=deltas["delta_lo"].fillna(deltas["delta"]),
                           delta_hi=deltas["delta_hi"].fillna(deltas["delta"]))  # fmt: skip
    pareto = summary.dropna(subset=["mean", "kv_bytes"])
    return [
        *plots.loss_curves(curves, out / "loss_curves", title=f"{out.name}: mean over seeds"),
        *plots.forest(deltas, out / "forest", label="arm", lo="delta_lo", hi="delta_hi"),
        *plots.loss_vs_kv_pareto(pareto, out / "val_loss_vs_kv", x="kv_bytes", y="mean", label="arm"),
    ]


def _markdown(summary: pd.DataFrame, failed: pd.DataFrame, title: str) -> str:
    lines = [f"# {title}", "", summary.to_markdown(index=False, floatfmt=".4g"), ""]
    lines += ["## Failed runs", "", failed.to_markdown(index=False) if len(failed) else "none", ""]
    return "\n".join(lines)


def report(multirun_dir: str | Path, out: str | Path | None = None) -> pd.DataFrame:
    """Write the summary and figures for the grid under `multirun_dir` (into it, unless `out`); return the table."""
    multirun_dir = Path(multirun_dir)
    out = Path(out) if out else multirun_dir
    runs = load(str(multirun_dir))
    runs = runs[runs[ARM].notna()] if ARM in runs else runs
    if runs.empty:
        raise SystemExit(f"no ablation runs under {multirun_dir}")
    baselines = runs["ablation.baseline"].dropna().unique()
    summary = summarize(runs, str(baselines[0]) if len(baselines) else str(runs[ARM].iloc[0]))
    failed = failures(runs)
    out.mkdir(parents=True, exist_ok=True)
    summary.to_csv(out / "summary.csv", index=False)
    (out / "summary.md").write_text(_markdown(summary, failed, f"{multirun_dir.name}: {METRIC} by arm"))
    paths = figures(runs, summary, out)
    print(_markdown(summary, failed, f"{multirun_dir.name}: {METRIC} by arm"))
    print(f"table: {out / 'summary.csv'}, {out / 'summary.md'}")
    print("figures: " + ", ".join(str(p) for p in paths if p.suffix == ".png") + " (and .svg beside each)")
    return summary


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m analysis.report", description=__doc__.splitlines()[0])
    parser.add_argument("multirun_dir")
    parser.add_argument("--out", help="where to write (default: the multirun dir)")
    args = parser.parse_args(argv)
    report(args.multirun_dir, args.out)


if __name__ == "__main__":
    main()
