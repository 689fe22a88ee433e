"""`python -m analysis.report <multirun dir>`: one ablation grid's statistics, decisions and figures.

Each arm is compared with the baseline arm over the seeds both completed (paired by seed): Δ = arm - baseline with
its 95% interval and paired t-test p, Holm's adjustment of p over the grid's comparisons (`p_holm`), the smallest
|Δ| the grid could detect (`mde`) and a `decision`: better / worse (Holm rejects at 0.05), equivalent (TOST: the 90%
interval inside ±`ablation.margin`), inconclusive (neither). A grid that trains every arm at several learning rates
(`ablation.lrs`) is compared at each arm's best rate, picked on `selection_loss`. A control arm (`ablation.control`)
must come out worse, or the study is marked blind (`sensitive` no). Runs of more than one commit are refused unless
--allow-mixed-commits: a code change alone moves a 3-seed mean by as much as the effects under study.

Writes summary.csv and summary.md (first one sentence per arm, then the table and the failed runs) and PNG/SVG
figures: loss curves per arm, a forest plot of Δ, val loss vs KV bytes, and (tuned grids) loss vs learning rate.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import optimize, stats

from analysis import plots
from analysis.cli import Parser, user_errors
from analysis.runs import load, load_metrics

ARM, METRIC, LR, SELECTION, SHA = "ablation.arm", "val_loss", "optim.lr", "selection_loss", "git_sha"
ALPHA, POWER = 0.05, 0.8
COMPLETED = "completed"
COLUMNS = ["arm", "baseline", "n", "failed", "best_lr", "mean", "std", "ci_lo", "ci_hi", "delta", "delta_lo",
           "delta_hi", "p_value", "p_holm", "mde", "decision", "sensitive", "sd_d", "tost_lo", "tost_hi", "n_pairs",
           "identical", "kv_bytes", "params"]  # fmt: skip


def higher_is_better(metric: str) -> bool:
    """Accuracies rise as a model improves; every other metric here (losses, bpb, perplexity) falls."""
    return metric.endswith("accuracy")


def grid_value(runs: pd.DataFrame, key: str) -> Any:
    """The one value grid key `key` takes over the runs (None when absent or null); a ValueError naming the values
    when runs disagree, since such runs belong to different studies."""
    if key not in runs:
        return None
    values = runs[key].dropna().unique()
    if len(values) > 1:
        raise ValueError(f"{key}: got {sorted(map(str, values))} across the runs; allowed: one value per study")
    return values[0] if len(values) else None


def baseline_arm(runs: pd.DataFrame) -> str:
    """The arm every other is compared with: the grid's `ablation.baseline`, else (a grid without one) the first arm."""
    base = grid_value(runs, "ablation.baseline")
    return str(base) if base is not None else str(runs[ARM].iloc[0])


def margin_and_control(runs: pd.DataFrame) -> dict[str, Any]:
    """The grid's `ablation.margin` (float) and `ablation.control` (arm), None where unset: summarize's keywords."""
    margin, control = grid_value(runs, "ablation.margin"), grid_value(runs, "ablation.control")
    try:
        margin = None if margin is None else float(margin)
    except (TypeError, ValueError):
        raise ValueError(f"ablation.margin: got {margin!r}; allowed: a number >= 0 in metric units, or null") from None
    return {"margin": margin, "control": None if control is None else str(control)}


def commits(runs: pd.DataFrame) -> pd.Series:
    """Runs per `git_sha`, most first; runs that recorded none count as one commit, "unknown"."""
    sha = runs[SHA] if SHA in runs else pd.Series(None, index=runs.index, dtype=object)
    return sha.astype(object).where(sha.notna(), "unknown").astype(str).value_counts()


def check_one_commit(runs: pd.DataFrame, where: str | Path) -> None:
    """A ValueError naming the commits when the runs come from more than one."""
    found = commits(runs)
    if len(found) > 1:
        listed = ", ".join(f"{sha[:12]} ({n} runs)" for sha, n in found.items())
        raise ValueError(
            f"git_sha: the runs under {where} come from {len(found)} commits: {listed}; allowed: one commit per "
            "study (rerun the others on one commit, or pass --allow-mixed-commits)"
        )


def is_tuned(runs: pd.DataFrame) -> bool:
    """Whether some arm was trained at more than one learning rate (a grid with `ablation.lrs`)."""
    return LR in runs and bool(runs.groupby(ARM)[LR].nunique().gt(1).any())


def check_one_study(runs: pd.DataFrame, where: str | Path) -> None:
    """A ValueError when one arm x seed (x learning rate, in a tuned grid) appears twice: pairing by seed would then
    pair runs of different settings."""
    keys = [ARM, "seed", *([LR] if is_tuned(runs) else [])]
    twice = runs[runs.duplicated(keys, keep=False)]
    if len(twice):
        found = sorted(set(twice[keys].itertuples(index=False, name=None)))
        raise ValueError(f"{where}: {' x '.join(keys)} {found} appear in more than one run (runs of different "
                         "settings in one dir); point multirun_dir at one study")  # fmt: skip


def selection_metric(runs: pd.DataFrame, metric: str) -> str:
    """What picks each arm's learning rate: `selection_loss` (a held-out selection split) where the runs have it,
    else `metric` itself, the reported split, whose numbers are then optimistic (chosen and reported on one split)."""
    done = runs[runs["status"] == COMPLETED]
    has = SELECTION in done and pd.to_numeric(done[SELECTION], errors="coerce").notna().any()
    return SELECTION if has else metric


def best_lrs(runs: pd.DataFrame, selection: str) -> dict[str, float]:
    """Per arm, the learning rate with the best mean `selection` over its completed seeds, among the rates where no
    run failed (a rate that diverges on some seed is no usable setting) if there are any; NaN without `optim.lr` or
    without a completed run."""
    if LR not in runs:
        return dict.fromkeys(runs[ARM].unique(), np.nan)
    sign = -1.0 if higher_is_better(selection) else 1.0
    out = {}
    for arm, g in runs.groupby(ARM, sort=False):
        ok = g[g["status"] == COMPLETED]
        scores = sign * pd.to_numeric(ok[selection], errors="coerce").groupby(ok[LR]).mean().dropna()
        usable = scores[~scores.index.isin(g.loc[g["status"] == "failed", LR])]
        scores = usable if len(usable) else scores
        out[arm] = float(scores.idxmin()) if len(scores) else np.nan
    return out


def at_lrs(runs: pd.DataFrame, lrs: Mapping[str, float]) -> pd.DataFrame:
    """Each arm's runs at its rate in `lrs` (all of its runs where that is NaN: nothing to choose between)."""
    chosen = runs[ARM].map(lrs)
    return runs[chosen.isna() | (runs[LR] == chosen)] if LR in runs else runs


def mean_interval(values: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Student-t interval of the mean (scipy); NaN with fewer than 2 values, a point when they are all equal."""
    if len(values) < 2:
        return np.nan, np.nan
    if np.ptp(values) == 0:  # scipy warns of precision loss on constant data; the interval is the value itself
        return float(values[0]), float(values[0])
    ci = stats.ttest_1samp(values, 0.0).confidence_interval(level)
    return float(ci.low), float(ci.high)


def paired(arm: pd.DataFrame, base: pd.DataFrame, metric: str) -> dict[str, Any]:
    """Δ = arm - baseline paired by seed: mean, 95% interval (delta_lo/hi), paired t-test p, the 90% interval that
    TOST at 0.05 reads (tost_lo/hi), the spread sd_d of the differences, n_pairs, and `identical` (every difference
    exactly 0). Differences without spread are a point: p 1 when they are all 0, 0 for a constant shift."""
    both = arm[["seed", metric]].merge(base[["seed", metric]], on="seed", suffixes=("", "_base"))
    a, b = both[metric].to_numpy(float), both[f"{metric}_base"].to_numpy(float)
    d = a - b
    n = len(d)
    out = {"delta": float(d.mean()) if n else np.nan, "delta_lo": np.nan, "delta_hi": np.nan, "tost_lo": np.nan,
           "tost_hi": np.nan, "sd_d": float(d.std(ddof=1)) if n > 1 else np.nan, "p_value": np.nan, "n_pairs": n,
           "identical": bool(n and (d == 0).all())}  # fmt: skip
    if n < 2:
        return out
    if np.ptp(d) == 0:
        point = dict.fromkeys(("delta_lo", "delta_hi", "tost_lo", "tost_hi"), float(d[0]))
        return {**out, **point, "p_value": 1.0 if d[0] == 0 else 0.0}
    test = stats.ttest_rel(a, b)
    ci95, ci90 = test.confidence_interval(0.95), test.confidence_interval(1 - 2 * ALPHA)
    return {**out, "delta_lo": float(ci95.low), "delta_hi": float(ci95.high), "tost_lo": float(ci90.low),
            "tost_hi": float(ci90.high), "p_value": float(test.pvalue)}  # fmt: skip


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjustment: the k-th smallest of m p-values times (m - k + 1), made non-decreasing, capped
    at 1. It holds the grid's family-wise error at α whatever the dependence between comparisons (they share the
    baseline). NaN entries (no test) are not in the family and stay NaN."""
    p = np.asarray(p_values, float)
    out = np.full(p.shape, np.nan)
    tested = np.flatnonzero(~np.isnan(p))
    order = tested[np.argsort(p[tested], kind="stable")]
    m = len(order)
    out[order] = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    return out


def mde(sd_d: float, n: int, alpha: float = ALPHA, power: float = POWER) -> float:
    """The smallest |Δ| a two-sided paired t-test at `alpha` over `n` pairs whose differences spread by `sd_d` detects
    with probability `power`. Solved exactly with the noncentral t: P(|T| > t_{1-α/2, n-1}) = power for
    T ~ nct(n-1, Δ√n/sd_d); the usual (t_{1-α/2,n-1} + t_{power,n-1}) sd_d/√n is 5% low at n = 3 and 14% at n = 2.
    It is per comparison: Holm tests the smallest p at α/m, so the grid's corrected MDE is larger. NaN below 2 pairs."""
    if n < 2 or np.isnan(sd_d):
        return np.nan
    df, crit = n - 1, stats.t.ppf(1 - alpha / 2, n - 1)

    def shortfall(nc: float) -> float:  # both tails; the lower as the upper at -nc (nct.cdf is NaN far in its tail)
        return stats.nct.sf(crit, df, nc) + stats.nct.sf(crit, df, -nc) - power

    high = crit + stats.t.ppf(power, df)  # the approximation: a lower bound on the noncentrality needed
    while shortfall(high) < 0:
        high *= 1.5
    return float(optimize.brentq(shortfall, 0.0, high) * sd_d / np.sqrt(n))


def _decision(row: Mapping[str, Any], margin: float | None, higher_better: bool) -> str:
    if row["identical"]:
        return "equivalent"
    if row["p_holm"] < ALPHA:
        return "better" if (row["delta"] > 0) == higher_better else "worse"
    if margin is not None and -margin < row["tost_lo"] and row["tost_hi"] < margin:
        return "equivalent"
    return "inconclusive"


def summarize(
    runs: pd.DataFrame, baseline: str, metric: str = METRIC, *, margin: float | None = None,
    control: str | None = None, selection: str | None = None,
) -> pd.DataFrame:  # fmt: skip
    """One row per arm, from its runs at its best learning rate (`best_lr`, picked on `selection`, by default
    `selection_metric`), paired by seed with the baseline's at its own: n, failed, mean, std and 95% interval; Δ,
    p, `p_holm` over the arms, `mde`, `decision` (`margin`: ± in metric units, None: nothing can be equivalent).
    With a `control` arm, `sensitive` is "yes" iff its decision is worse; when it is "no", no arm is called
    equivalent (only identical ones): a study that cannot see its factor cannot show its absence."""
    arms = [str(a) for a in runs[ARM].unique()]
    if margin is not None and not (np.isfinite(margin) and margin >= 0):
        raise ValueError(f"ablation.margin: got {margin!r}; allowed: a number >= 0 in {metric}'s units, or null")
    if control is not None and (control not in arms or control == baseline):
        others = ", ".join(a for a in arms if a != baseline)
        raise ValueError(f"ablation.control: got {control!r}; allowed: an arm other than the baseline: {others}")
    lrs = best_lrs(runs, selection or selection_metric(runs, metric))
    chosen = at_lrs(runs, lrs)
    done = chosen[chosen["status"] == COMPLETED]
    base = done[done[ARM] == baseline]
    rows = []
    for arm, g in chosen.groupby(ARM, sort=False):
        ok = done[done[ARM] == arm]
        values = ok[metric].to_numpy(float)
        lo, hi = mean_interval(values)
        rows.append({"arm": arm, "baseline": arm == baseline, "n": len(values),
                     "failed": int((g["status"] != COMPLETED).sum()), "best_lr": lrs[arm],
                     "mean": values.mean() if len(values) else np.nan,
                     "std": values.std(ddof=1) if len(values) > 1 else np.nan, "ci_lo": lo, "ci_hi": hi,
                     **paired(ok, base, metric),
                     "kv_bytes": ok["kv_cache_bytes"].mean() if len(ok) else np.nan,
                     "params": ok["params.total"].mean() if len(ok) else np.nan})  # fmt: skip
    summary = pd.DataFrame(rows)
    compared = ~summary["baseline"]
    summary.loc[~compared, "p_value"] = np.nan  # the baseline against itself is no comparison
    summary["p_holm"] = holm(summary["p_value"])
    summary["mde"] = [
        mde(s, n) if c else np.nan for s, n, c in zip(summary["sd_d"], summary["n_pairs"], compared, strict=True)
    ]
    summary["decision"] = [
        _decision(r, margin, higher_is_better(metric)) if c else "baseline"
        for r, c in zip(summary.to_dict("records"), compared, strict=True)
    ]
    summary["sensitive"] = None
    if control is not None:
        sensitive = summary.loc[summary["arm"] == control, "decision"].item() == "worse"
        summary["sensitive"] = "yes" if sensitive else "no"
        if not sensitive:
            summary.loc[(summary["decision"] == "equivalent") & ~summary["identical"], "decision"] = "inconclusive"
    return summary[COLUMNS]


def lr_table(runs: pd.DataFrame, metric: str = METRIC) -> pd.DataFrame:
    """Per arm and learning rate: completed seeds, failures, mean and 95% interval of `metric`, and `diverged`: a run
    failed (a NaN/inf loss fails it) or ended above ln(vocab), the loss of the uniform guess a model starts from."""
    rows = []
    for arm, g_arm in runs.groupby(ARM, sort=False):
        for lr, g in g_arm.groupby(LR):
            ok = g[g["status"] == COMPLETED]
            values = ok[metric].to_numpy(float)
            start = np.log(ok["model.vocab_size"].to_numpy(float)) if "model.vocab_size" in ok else np.inf
            above = metric.endswith("loss") and bool((values > start).any())
            lo, hi = mean_interval(values)
            rows.append({"arm": arm, "lr": lr, "n": len(values), "failed": int((g["status"] == "failed").sum()),
                         "mean": values.mean() if len(values) else np.nan, "ci_lo": lo, "ci_hi": hi,
                         "diverged": above or bool((g["status"] == "failed").any())})  # fmt: skip
    return pd.DataFrame(rows)


def failures(runs: pd.DataFrame) -> pd.DataFrame:
    """Runs that did not complete, with their error and, for a NaN/inf loss, the step it appeared at."""
    bad = runs[runs["status"] != COMPLETED]
    return bad.reindex(columns=[ARM, *([LR] if is_tuned(runs) else []), "seed", "status", "failed_step", "error",
                                "run_dir"])  # fmt: skip


def figures(runs: pd.DataFrame, summary: pd.DataFrame, out: Path, metric: str = METRIC) -> list[Path]:
    chosen = at_lrs(runs, dict(zip(summary["arm"], summary["best_lr"], strict=True)))
    done = chosen[chosen["status"] == COMPLETED]
    curves = {}
    for arm, g in done.groupby(ARM, sort=False):  # the mean curve over seeds, step by step
        curves[arm] = pd.concat([load_metrics(d) for d in g["run_dir"]]).groupby("step", as_index=False).mean()
    deltas = summary[~summary["baseline"] & summary["delta"].notna()]
    deltas = deltas.assign(delta_lo=deltas["delta_lo"].fillna(deltas["delta"]),
                           delta_hi=deltas["delta_hi"].fillna(deltas["delta"]))  # fmt: skip
    pareto = summary.dropna(subset=["mean", "kv_bytes"])
    paths = [
        *plots.loss_curves(curves, out / "loss_curves", title=f"{out.name}: mean over seeds"),
        *plots.forest(deltas, out / "forest", label="arm", lo="delta_lo", hi="delta_hi"),
        *plots.loss_vs_kv_pareto(pareto, out / "val_loss_vs_kv", x="kv_bytes", y="mean", label="arm"),
    ]
    if is_tuned(runs):
        best = dict(zip(summary["arm"], summary["best_lr"], strict=True))
        fig = plots.lr_sensitivity_figure(lr_table(runs, metric), best=best, ylabel=metric, title=out.name)
        paths += plots.save(fig, out / "lr_sensitivity")
    return paths


def _unit(metric: str) -> str:
    return " nats" if metric.endswith("loss") else ""


def _num(x: float, sign: str = "") -> str:
    """Three decimals, or two significant digits where those would print a nonzero value as 0.000 (a task solved
    by both arms differs by 1e-5 nats)."""
    return f"{x:{sign}.2e}" if 0 < abs(x) < 5e-4 else f"{x:{sign}.3f}"


def _sentence(r: Mapping[str, Any], baseline: str, metric: str, margin: float | None, blind: bool) -> str:
    """One arm's result in words, e.g. "r3_1 vs r5_1: worse by 0.031 nats [0.012, 0.050], p_holm 0.004 (MDE 0.018)",
    and how many of its runs failed (they are in no statistic)."""
    text = _verdict(r, baseline, metric, margin, blind)
    return text + (f" ({r['failed']} of its runs did not complete: see Failed runs)" if r["failed"] else "")


def _verdict(r: Mapping[str, Any], baseline: str, metric: str, margin: float | None, blind: bool) -> str:
    u = _unit(metric)
    head = f"{r['arm']} vs {baseline}"
    stats_ = f"p_holm {r['p_holm']:.2g} (MDE {_num(r['mde'])}{u})"
    signed = f"Δ {_num(r['delta'], '+')}{u} [{_num(r['delta_lo'], '+')}, {_num(r['delta_hi'], '+')}]"
    if r["identical"]:
        return f"{head}: equivalent: identical on all {r['n_pairs']} shared seeds (every paired difference is 0)"
    if r["n_pairs"] < 2:
        return f"{head}: inconclusive: {r['n_pairs']} seed(s) shared with the baseline; a paired test needs 2"
    if r["decision"] in ("better", "worse"):
        s = np.sign(r["delta"])
        lo, hi = sorted((s * r["delta_lo"], s * r["delta_hi"]))
        return f"{head}: {r['decision']} by {_num(abs(r['delta']))}{u} [{_num(lo)}, {_num(hi)}], {stats_}"
    if r["decision"] == "equivalent":
        return (f"{head}: equivalent within ±{margin:.3g}{u}: {signed}, 90% interval [{_num(r['tost_lo'], '+')}, "
                f"{_num(r['tost_hi'], '+')}] inside the margin, {stats_}")  # fmt: skip
    if blind:
        why = "the control did not separate, so this is not evidence of no difference"
    elif margin is None:
        why = "no ablation.margin, so equivalence cannot be shown"
    else:
        why = f"neither a difference nor equivalence within ±{margin:.3g}{u} is shown"
    return f"{head}: inconclusive: {signed}, {stats_}; {why}"


def opening(summary: pd.DataFrame, metric: str, margin: float | None, control: str | None) -> list[str]:
    """summary.md's first lines: a blind study says so first; then one sentence per arm and what the grid detects."""
    base = summary.loc[summary["baseline"], "arm"]
    baseline = str(base.iloc[0]) if len(base) else "the baseline (not run)"
    blind = control is not None and summary["sensitive"].iloc[0] == "no"
    lines = []
    if blind:
        decision = summary.loc[summary["arm"] == control, "decision"].item()
        lines.append(
            f"**This study cannot see its factor**: its control arm {control} must come out worse than {baseline} "
            f"and came out {decision}, so no result below is evidence of no difference."
        )
    arms = summary[~summary["baseline"]]
    lines += [f"- {_sentence(r, baseline, metric, margin, blind)}" for r in arms.to_dict("records")]
    found = arms.loc[~arms["identical"], "mde"].dropna()  # an identical arm's 0 says nothing about the grid
    if len(found):
        u, pairs = _unit(metric), ", ".join(map(str, sorted(set(arms.loc[found.index, "n_pairs"]))))
        span = f"{_num(found.min())}{u}" + (f" to {_num(found.max())}{u}" if found.max() > found.min() else "")
        lines.append(f"- MDE (the smallest |Δ| detected with 80% power, two-sided α {ALPHA}, paired t over {pairs} "
                     f"seeds, before Holm's correction): {span}")  # fmt: skip
    return lines


def _notes(runs: pd.DataFrame, margin: float | None, selection: str) -> list[str]:
    """What the reader needs to weigh the table: the commits pooled, the margin and tests, how rates were picked."""
    found = commits(runs)
    pooled = " (pooled with --allow-mixed-commits)" if len(found) > 1 else ""
    notes = [
        "commits: " + ", ".join(f"{sha[:12]} ({n} runs)" for sha, n in found.items()) + pooled,
        f"margin (ablation.margin): {'none, so no arm can be equivalent' if margin is None else f'±{margin:g}'}; "
        "better/worse: the Holm-adjusted paired t-test rejects at 0.05; equivalent: TOST at 0.05, i.e. the 90% Δ "
        "interval inside the margin; inconclusive: neither",
    ]
    if is_tuned(runs):
        caveat = f" (no {SELECTION} in the runs: the choice was made on the reported split, so each arm's numbers at "
        caveat += "its best rate are optimistic)"
        notes.append(f"best_lr: per arm, the rate with the best mean {selection} over seeds"
                     + ("" if selection == SELECTION else caveat))  # fmt: skip
    return notes


def _markdown(summary: pd.DataFrame, failed: pd.DataFrame, title: str, head: list[str], notes: list[str]) -> str:
    lines = [*head, "", f"# {title}", "", *[f"- {n}" for n in notes], "", summary.to_markdown(index=False,
             floatfmt=".4g"), ""]  # fmt: skip
    lines += ["## Failed runs", "", failed.to_markdown(index=False) if len(failed) else "none", ""]
    return "\n".join(lines)


def report(multirun_dir: str | Path, out: str | Path | None = None, *, allow_mixed_commits: bool = False
           ) -> pd.DataFrame:  # fmt: skip
    """Write the summary and figures for the grid under `multirun_dir` (into it, unless `out`); return the table.
    A ValueError when its runs come from several commits (unless `allow_mixed_commits`) or from several studies."""
    multirun_dir = Path(multirun_dir)
    if not multirun_dir.is_dir():  # never a W&B project: a grid's report reads its run dirs
        raise FileNotFoundError(f"multirun_dir: got {str(multirun_dir)!r}, which is not a folder; allowed: a "
                                "multirun dir (multirun/<grid>) holding run dirs with results.json")  # fmt: skip
    out = Path(out) if out else multirun_dir
    runs = load(str(multirun_dir))
    if runs.empty or ARM not in runs or runs[ARM].isna().all():
        raise FileNotFoundError(f"no ablation runs (results.json with an ablation.arm) under {multirun_dir}")
    runs = runs[runs[ARM].notna()].reset_index(drop=True)
    if not allow_mixed_commits:
        check_one_commit(runs, multirun_dir)
    check_one_study(runs, multirun_dir)
    metric = str(grid_value(runs, "ablation.metric") or METRIC)  # the grid's own (older runs lack it: val_loss)
    if metric not in runs or runs[metric].isna().all():
        raise ValueError(f"ablation.metric: got {metric!r}, which no run of {multirun_dir} recorded; allowed: a "
                         "metric its results.json files hold (val_bpb needs byte-level data)")  # fmt: skip
    keys, selection = margin_and_control(runs), selection_metric(runs, metric)
    summary = summarize(runs, baseline_arm(runs), metric, **keys, selection=selection)
    head = opening(summary, metric, **keys)
    text = _markdown(summary, failures(runs), f"{multirun_dir.name}: {metric} by arm", head,
                     _notes(runs, keys["margin"], selection))  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    summary.to_csv(out / "summary.csv", index=False)
    (out / "summary.md").write_text(text)
    paths = figures(runs, summary, out, metric)
    print(text)
    print(f"table: {out / 'summary.csv'}, {out / 'summary.md'}")
    print("figures: " + ", ".join(str(p) for p in paths if p.suffix == ".png") + " (and .svg beside each)")
    return summary


def main(argv: list[str] | None = None) -> None:
    parser = Parser(prog="python -m analysis.report", description=__doc__.splitlines()[0])
    parser.add_argument("multirun_dir")
    parser.add_argument("--out", help="where to write (default: the multirun dir)")
    parser.add_argument("--allow-mixed-commits", action="store_true",
                        help="pool runs of different git_sha (refused by default)")  # fmt: skip
    args = parser.parse_args(argv)
    if args.out is not None and Path(args.out).exists() and not Path(args.out).is_dir():
        parser.error(f"--out: got {args.out!r}, a file; allowed: a folder that exists or can be created")
    with user_errors(ValueError, FileNotFoundError):  # report's own, each naming the file or key
        report(args.multirun_dir, args.out, allow_mixed_commits=args.allow_mixed_commits)


if __name__ == "__main__":
    main()
