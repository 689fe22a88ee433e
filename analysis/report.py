"""`python -m analysis.report <multirun dir>`: one ablation grid's statistics, decisions and figures.

Each arm is compared with the baseline arm over the seeds both completed (paired by seed): Δ = arm - baseline with
its 95% interval and paired t-test p, Holm's adjustment of p over the grid's comparisons (`p_holm`), the smallest
|Δ| the grid could detect (`mde`) and a `decision`: better / worse (the step-down rejects no difference), equivalent
(TOST inside ±`ablation.margin`), inconclusive (neither), unbracketed (the arm's or the baseline's best rate is an
open edge of its rates), all by `workbench.decide` (docs/decisions.md) at α / the sweep's planned looks
(`sweep.json`; none: one look at 0.05). A grid that trains every arm at several learning rates
(`ablation.lrs`) is compared at each arm's best rate, picked on `selection_loss`. A control arm (`ablation.control`)
must come out worse, or the study is marked blind (`sensitive` no). Runs of more than one commit are refused unless
--allow-mixed-commits: a code change alone moves a 3-seed mean by as much as the effects under study.

Writes summary.csv and summary.md (first one sentence per arm, then the table and the failed runs) and PNG/SVG
figures: loss curves per arm, a forest plot of Δ, the metric vs KV bytes (`val_loss_vs_kv`, or `metric_vs_kv` for
another metric), and (tuned grids) the metric vs learning rate.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analysis import plots
from analysis.cli import Parser, user_errors
from analysis.runs import load, load_metrics
from workbench import measures
from workbench.decide import (  # noqa: F401  (the statistics moved there; notebooks and tests import them from here)
    ALPHA,
    ARM,
    COLUMNS,
    COMPLETED,
    CURVE_KINDS,
    LR,
    LR_BOUNDS,
    METRIC,
    POWER,
    SELECTION,
    TESTS,
    aa_arm,
    at_lrs,
    best_lrs,
    brackets,
    higher_is_better,
    holm,
    log_step,
    look_alpha,
    lr_stability,
    lr_table,
    mde,
    mean_interval,
    paired,
    planned_looks,
    selection_metric,
    summarize,
)  # fmt: skip

SHA = "git_sha"
MEASURED = {
    "steps_to": "measured: per run, the first logged step at which {m.source}'s running mean over {smooth} logged "
    "points is {m.op} {m.threshold:g} (lower is better); a run that never gets there is censored at its last step, "
    "and each pair is compared at the earlier of its two last steps, a censored run ranked last (censored: per arm)",
    "solved": "measured: per run, 1 when its final {m.source} is {m.op} {m.threshold:g}, else 0; mean: the share "
    "of seeds solved, Δ: the arm's share minus the baseline's (higher is better)",
    "auc": "measured: per run, the mean of its logged {m.source} over the steps it was logged at (trapezoids): "
    "how fast it fell or rose over training",
}
EQUIVALENCE = {
    "t": "TOST rejects at {a:.3g} in the same step-down (tost_lo/hi: the 1 - 2α Δ interval)",
    "rank": "both one-sided signed-rank tests of Δ ± margin reject at {a:.3g} in the same step-down, read only "
    "where no pair is censored (a censored Δ understates the true one)",
    "exact": "not tested (a share over few seeds cannot be shown inside a margin); an identical arm is equivalent",
}
SWEEP_STATE = "sweep.json"  # the sweeper's rounds: looks done and planned, alpha, bracketing settings


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


def measure_keys(runs: pd.DataFrame) -> dict[str, Any]:
    """The grid's `ablation.smooth` and `ablation.eval_average` (defaults where the runs predate them)."""
    smooth, average = grid_value(runs, "ablation.smooth"), grid_value(runs, "ablation.eval_average")
    return {"smooth": measures.SMOOTH if smooth is None else int(smooth),
            "eval_average": None if average is None else int(average)}  # fmt: skip


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


def _grid_list(runs: pd.DataFrame, key: str) -> list[Any]:
    """A list-valued grid key (`ablation.lrs`, `ablation.seeds`) as its first run recorded it; [] when absent."""
    values = runs[key].dropna() if key in runs else pd.Series(dtype=object)
    return list(values.iloc[0]) if len(values) and isinstance(values.iloc[0], list) else []


def sweep_state(multirun_dir: Path, runs: pd.DataFrame) -> dict[str, Any]:
    """The sweeper's `sweep.json` (looks, max_looks, alpha, bracket, lr_bounds, lr_step); a sweep dir without one
    had one look at alpha 0.05, bracketing on when the grid has several rates (`ablation.lrs`, else the rates its
    runs tried), the default bounds and the grid's own log step."""
    path = multirun_dir / SWEEP_STATE
    state = json.loads(path.read_text()) if path.is_file() else {}
    initial = _grid_list(runs, "ablation.lrs") or (sorted(runs[LR].dropna().unique()) if LR in runs else [])
    return {"looks": int(state.get("looks", 1)), "max_looks": int(state.get("max_looks", 1)),
            "alpha": float(state.get("alpha", ALPHA)), "bracket": bool(state.get("bracket", len(initial) > 1)),
            "lr_bounds": tuple(map(float, state.get("lr_bounds", LR_BOUNDS))),
            "lr_step": float(state.get("lr_step", log_step(initial)))}  # fmt: skip


def look_counts(runs: pd.DataFrame, looks: int) -> list[int] | None:
    """The seed counts of the sweep's first `looks` looks (planned_looks of the grid's seeds, `ablation.seed_step`
    and `ablation.max_seeds`); runs without those keys: the distinct counts of seeds the arms ran. None: one look."""
    if looks <= 1:
        return None
    seeds = _grid_list(runs, "ablation.quick_seeds" if grid_value(runs, "ablation.quick") else "ablation.seeds")
    if seeds and "ablation.seed_step" in runs and "ablation.max_seeds" in runs:
        step, cap = grid_value(runs, "ablation.seed_step"), grid_value(runs, "ablation.max_seeds")
        return planned_looks(len(seeds), None if step is None else int(step), None if cap is None else int(cap))[:looks]
    return sorted(int(c) for c in runs.groupby(ARM)["seed"].nunique().unique())


def failures(runs: pd.DataFrame) -> pd.DataFrame:
    """Runs that did not complete, with their error and, for a NaN/inf loss, the step it appeared at."""
    bad = runs[runs["status"] != COMPLETED]
    return bad.reindex(columns=[ARM, *([LR] if is_tuned(runs) else []), "seed", "status", "failed_step", "error",
                                "run_dir"])  # fmt: skip


def figures(runs: pd.DataFrame, summary: pd.DataFrame, out: Path, metric: str = METRIC, *,
            smooth: int = measures.SMOOTH, eval_average: int | None = None) -> list[Path]:  # fmt: skip
    """Loss curves (the mean over seeds; a steps_to measure's curve first, each arm's crossing steps marked on it),
    the forest plot of Δ, loss vs KV bytes and, for tuned grids, the metric against the learning rate."""
    m = measures.parse(metric)
    runs = runs.assign(**{metric: measures.values(runs, metric, smooth=smooth, eval_average=eval_average)["value"]})
    chosen = at_lrs(runs, dict(zip(summary["arm"], summary["best_lr"], strict=True)))
    done = chosen[chosen["status"] == COMPLETED]
    curves = {}
    for arm, g in done.groupby(ARM, sort=False):  # the mean curve over seeds, step by step
        curves[arm] = pd.concat([load_metrics(d) for d in g["run_dir"]]).groupby("step", as_index=False).mean()
    y, marks = ("train/loss", "val/loss"), None
    if m.kind in ("steps_to", "auc"):
        name = measures.LOGGED.get(m.source, m.source)
        y = (name, *[k for k in y if k != name])
    if m.kind == "steps_to":
        crossed = measures.values(done, metric, smooth=smooth)
        hit = done.assign(step=crossed["value"])[~crossed["censored"]]
        marks = {str(a): g["step"].tolist() for a, g in hit.groupby(ARM, sort=False)}
    deltas = summary[~summary["baseline"] & summary["delta"].notna()]
    deltas = deltas.assign(delta_lo=deltas["delta_lo"].fillna(deltas["delta"]),
                           delta_hi=deltas["delta_hi"].fillna(deltas["delta"]))  # fmt: skip
    pareto = summary.dropna(subset=["mean", "kv_bytes"])
    paths = [
        *plots.loss_curves(
            curves,
            out / "loss_curves",
            y=y,
            title=f"{out.name}: mean over seeds",
            marks=marks,
            threshold=m.threshold if m.kind == "steps_to" else None,
        ),
        *plots.forest(
            deltas,
            out / "forest",
            label="arm",
            lo="delta_lo",
            hi="delta_hi",
            xlabel=f"Δ {metric} vs baseline ({'higher' if m.higher_is_better else 'lower'} is better)",
        ),
        *plots.loss_vs_kv_pareto(
            pareto,
            out / ("val_loss_vs_kv" if metric == METRIC else "metric_vs_kv"),
            label="arm",
            y="mean",
            ylabel=f"{metric} (mean over seeds)",
            higher_is_better=m.higher_is_better,
        ),
    ]
    if is_tuned(runs):
        best = dict(zip(summary["arm"], summary["best_lr"], strict=True))
        fig = plots.lr_sensitivity_figure(lr_table(runs, metric), best=best, ylabel=metric, title=out.name)
        paths += plots.save(fig, out / "lr_sensitivity")
    return paths


def _unit(metric: str) -> str:
    return measures.parse(metric).unit


def _num(x: float, sign: str = "") -> str:
    """Three decimals, or two significant digits where those would print a nonzero value as 0.000 (a task solved
    by both arms differs by 1e-5 nats)."""
    return f"{x:{sign}.2e}" if 0 < abs(x) < 5e-4 else f"{x:{sign}.3f}"


def _sentence(r: Mapping[str, Any], baseline: str, metric: str, margin: float | None, blind: bool) -> str:
    """One arm's result in words, e.g. "r3_1 vs r5_1: worse by 0.031 nats [0.012, 0.050], p_holm 0.004 (MDE 0.018)",
    and how many of its runs failed (they are in no statistic)."""
    text = _verdict(r, baseline, metric, margin, blind)
    return text + (f" ({r['failed']} of its runs did not complete: see Failed runs)" if r["failed"] else "")


def _mde_words(r: Mapping[str, Any], u: str) -> str:
    if np.isinf(r["mde"]):
        return f"no MDE: {r['n_pairs']} pairs cannot reach significance with the {r['test']} test"
    return f"MDE {_num(r['mde'])}{u}"


def _verdict(r: Mapping[str, Any], baseline: str, metric: str, margin: float | None, blind: bool) -> str:
    u = _unit(metric)
    head = f"{r['arm']} vs {baseline}"
    stats_ = f"p_holm {r['p_holm']:.2g} ({_mde_words(r, u)})"
    has_interval = np.isfinite(r["delta_lo"]) and np.isfinite(r["delta_hi"])
    interval = f" [{_num(r['delta_lo'], '+')}, {_num(r['delta_hi'], '+')}]" if has_interval else f" ({r['test']})"
    signed = f"Δ {_num(r['delta'], '+')}{u}{interval}"
    if r["decision"] == "unbracketed":
        return f"{head}: unbracketed: {r['edges']}, so no call is made ({signed}, unadjusted p {r['p_value']:.2g})"
    if r["identical"]:
        return f"{head}: equivalent: identical on all {r['n_pairs']} shared seeds (every paired difference is 0)"
    if r["n_pairs"] < 2:
        return f"{head}: inconclusive: {r['n_pairs']} seed(s) shared with the baseline; a paired test needs 2"
    if r["decision"] in ("better", "worse"):
        s = np.sign(r["delta"])
        lo, hi = sorted((s * r["delta_lo"], s * r["delta_hi"]))
        interval = f" [{_num(lo)}, {_num(hi)}]" if has_interval else f" ({r['test']})"
        return f"{head}: {r['decision']} by {_num(abs(r['delta']))}{u}{interval}, {stats_}"
    if r["decision"] == "equivalent" and not np.isfinite(r["tost_lo"]):
        tost = f"the {r['test']} TOST rejects |Δ| >= margin"
        return f"{head}: equivalent within ±{margin:.3g}{u}: {signed}, {tost}, {stats_}"
    if r["decision"] == "equivalent":
        return (f"{head}: equivalent within ±{margin:.3g}{u}: {signed}, 90% interval [{_num(r['tost_lo'], '+')}, "
                f"{_num(r['tost_hi'], '+')}] inside the margin, {stats_}")  # fmt: skip
    if blind:
        why = "the control did not separate, so this is not evidence of no difference"
    elif margin is None:
        why = "no ablation.margin, so equivalence cannot be shown"
    else:
        why = f"neither a difference nor equivalence within ±{margin:.3g}{u} is shown"
        if r["test"] in (TESTS["exact"], TESTS["fisher"]):
            why = "no difference is shown, and a share solved has no equivalence test"
    return f"{head}: inconclusive: {signed}, {stats_}; {why}"


def _edge(row: Mapping[str, Any], who: str) -> str:
    """Why `who`'s rate is not bracketed, e.g. "its best rate 0.1 is the top of the rates tried (0.001, 0.01, 0.1)
    (next to try: 0.316)", from a `brackets` row."""
    tried, best = row["lrs_tried"], row["best_lr"]
    where = "the only rate" if len(tried) == 1 else "the top" if best == max(tried) else "the bottom"
    nxt = "" if row["next_lr"] is None else f" (next to try: {row['next_lr']:g})"
    return f"{who} best rate {best:g} is {where} of the rates tried ({', '.join(f'{x:g}' for x in tried)}){nxt}"


def _kv_cost(kv: Mapping[str, float], arm: str, baseline: str) -> str:
    """What the arm's layout costs in KV cache against the baseline's (results.json's kv_cache_bytes at the run's
    kv_reference_context), e.g. "; KV cache 0.17x global's (5.6 MiB vs 32 MiB)"; empty where either is unknown or
    they are equal."""
    a, b = kv.get(arm), kv.get(baseline)
    if a is None or b is None or not (np.isfinite(a) and np.isfinite(b) and b > 0) or a == b:
        return ""
    return f"; KV cache {a / b:.2g}x {baseline}'s ({a / 2**20:.3g} MiB vs {b / 2**20:.3g} MiB)"


def opening(summary: pd.DataFrame, metric: str, margin: float | None, control: str | None, *, alpha: float = ALPHA,
            bracketing: pd.DataFrame | None = None) -> list[str]:  # fmt: skip
    """summary.md's first lines: a blind study says so first; then one sentence per arm (an unbracketed one says
    which edge, from `bracketing`, the `brackets` table) and what the grid detects at the per-look `alpha`."""
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
    edges = {} if bracketing is None else {r["arm"]: r for r in bracketing.to_dict("records") if not r["bracketed"]}
    base_edge = [_edge(edges[baseline], f"the baseline {baseline}'s")] if baseline in edges else []
    own = {a: [_edge(r, "its")] for a, r in edges.items()}
    arms = arms.assign(edges=["; ".join(own.get(a, []) + base_edge) for a in arms["arm"]])
    kv = dict(zip(summary["arm"], summary["kv_bytes"], strict=True)) if "kv_bytes" in summary else {}
    lines += [f"- {_sentence(r, baseline, metric, margin, blind)}{_kv_cost(kv, r['arm'], baseline)}"
              for r in arms.to_dict("records")]  # fmt: skip
    found = arms.loc[~arms["identical"], "mde"].dropna()  # an identical arm's 0 says nothing about the grid
    found = found[np.isfinite(found)]
    if len(found):
        u, pairs = _unit(metric), ", ".join(map(str, sorted(set(arms.loc[found.index, "n_pairs"]))))
        test = "/".join(sorted(set(arms.loc[found.index, "test"])))
        span = f"{_num(found.min())}{u}" + (f" to {_num(found.max())}{u}" if found.max() > found.min() else "")
        how = {
            "paired t": "",
            "paired signed-rank, censored last": ", by simulation of normal differences with the measured sd_d",
        }.get(test, ", exact, the baseline's share solved and the arm's independent")
        lines.append(f"- MDE (the smallest |Δ| detected with 80% power, two-sided α {alpha:.3g}, {test} over {pairs} "
                     f"seeds{how}, before Holm's correction): {span}")  # fmt: skip
    return lines


def cautions(summary: pd.DataFrame, metric: str, margin: float | None, control: str | None, *, aa: bool = False,
             eval_average: int | None = None) -> list[str]:  # fmt: skip
    """summary.md's lines on what bounds the grid's power: the control's effect as a multiple of the margin (coarse
    above 5x), the A/A arm's call, the evaluation noise against the seeds' (`eval_se` over 10% of the baseline's
    `seed_sd`), fewer than 3 seeds, and the evaluations averaged."""
    rows = summary.set_index("arm")
    base = summary.loc[summary["baseline"], "arm"]
    u, lines = _unit(metric), []
    if control is not None and control in rows.index and margin and np.isfinite(rows.at[control, "delta"]):
        times = abs(rows.at[control, "delta"]) / margin
        lines.append(f"- control {control}: its effect {_num(abs(rows.at[control, 'delta']))}{u} is {times:.1f}× the "
                     f"margin ±{margin:g}{u}" + (": coarse (above 5×): it shows the grid sees a large effect, not one "
                     "of the margin's size; a graded control (e.g. the baseline at 70% of its steps) is nearer it"
                     if times > 5 else ""))  # fmt: skip
    if aa and len(base) and (name := aa_arm(str(base.iloc[0]))) in rows.index:
        call = rows.at[name, "decision"]
        fine = ", as it must be (it may be equivalent or inconclusive, never better or worse)"
        wrong = (": **a wrong call on identical configs**: the runs are not reproducible or the noise is not what "
                 "the test assumes; read every call with that")  # fmt: skip
        lines.append(f"- A/A arm {name} (the baseline's config under its own name): {call}"
                     + (wrong if call in ("better", "worse") else fine))  # fmt: skip
    if len(base):
        b = rows.loc[str(base.iloc[0])]
        if np.isfinite(b["eval_se"]) and np.isfinite(b["seed_sd"]) and b["eval_se"] > 0.1 * b["seed_sd"]:
            lines.append(f"- **the validation set is too small to see seed effects**: eval_se {_num(b['eval_se'])}{u} "
                         f"exceeds 10% of the baseline's seed_sd {_num(b['seed_sd'])}{u} (more data.val_tokens, or "
                         "ablation.eval_average)")  # fmt: skip
    seeds = int(summary["n"].max()) if len(summary) else 0
    if seeds < 3:
        lines.append(f"- **fewer than 3 seeds** ({seeds}): the seed spread is barely estimated and most tests "
                     "cannot reject")  # fmt: skip
    if eval_average is not None and measures.parse(metric).kind in ("final", "solved"):
        lines.append(f"- {metric} is each run's mean over its last {eval_average} evaluations (ablation.eval_average)")
    return lines


def _notes(runs: pd.DataFrame, margin: float | None, selection: str, state: Mapping[str, Any] | None = None,
           metric: str = METRIC, smooth: int = measures.SMOOTH) -> list[str]:  # fmt: skip
    """What the reader needs to weigh the table: what was measured and tested, the commits pooled, the margin, the
    looks and alpha spent (`state`: sweep_state's), how rates were picked and bracketed."""
    state = state or {"looks": 1, "max_looks": 1, "alpha": ALPHA, "bracket": False}
    a, k, big_k = look_alpha(state["alpha"], state["max_looks"]), state["looks"], state["max_looks"]
    found = commits(runs)
    pooled = " (pooled with --allow-mixed-commits)" if len(found) > 1 else ""
    m = measures.parse(metric)
    notes = [
        *([MEASURED[m.kind].format(m=m, smooth=smooth)] if m.kind in MEASURED else []),
        "commits: " + ", ".join(f"{sha[:12]} ({n} runs)" for sha, n in found.items()) + pooled,
        f"margin (ablation.margin): {'none, so no arm can be equivalent' if margin is None else f'±{margin:g}'}; "
        f"better/worse: the {TESTS[m.test]} test rejects at {a:.3g} after the step-down over the arms (p_holm); "
        f"equivalent: {EQUIVALENCE[m.test].format(a=a)}; "
        "inconclusive: neither; unbracketed: the arm's or the baseline's best rate is an open edge of its rates",
        f"looks: {k} of {big_k} planned, each testing at α {state['alpha']:g}/{big_k} = {a:.3g}, so {k * a:.3g} of α "
        f"{state['alpha']:g} is spent (union bound over the looks; a call made at a look stays: docs/decisions.md)",
    ]
    if is_tuned(runs):
        caveat = f" (no {SELECTION} in the runs: the choice was made on the reported split, so each arm's numbers at "
        caveat += "its best rate are optimistic)"
        if selection == metric != SELECTION and measures.parse(metric).kind in CURVE_KINDS:
            caveat = (" (a learning-speed measure picks the rate on itself: the final loss is one floor at every rate "
                      "that learns the task; each arm's number at its best rate is optimistic alike)")  # fmt: skip
        notes.append(f"best_lr: per arm, the rate with the best mean {selection} over seeds"
                     + ("" if selection == SELECTION else caveat))  # fmt: skip
        if state["bracket"]:
            lo, hi = state["lr_bounds"]
            notes.append(f"bracketing: on, rates within [{lo:g}, {hi:g}], step ×{state['lr_step']:.3g}: an arm is "
                         "bracketed when its best rate has a tried rate on each side, or the side's next rate diverged "
                         "or would leave the bounds")  # fmt: skip
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
    how = measure_keys(runs)
    value = measures.values(runs, metric, **how)["value"]  # brackets picks rates on it without a selection split
    if value.isna().all():
        raise ValueError(f"ablation.metric: got {metric!r}, which no run of {multirun_dir} recorded; allowed: a "
                         "metric its results.json or metrics.csv hold (val_bpb needs byte-level data)")  # fmt: skip
    runs = runs.assign(**{metric: value})
    keys, selection = margin_and_control(runs), selection_metric(runs, metric)
    state = sweep_state(multirun_dir, runs)
    alpha = look_alpha(state["alpha"], state["max_looks"])
    bracketing = brackets(runs, state["lr_bounds"], state["lr_step"], bracket=state["bracket"], selection=selection)
    summary = summarize(runs, baseline_arm(runs), metric, **keys, selection=selection, alpha=alpha,
                        looks=look_counts(runs, state["looks"]), **how,
                        bracketed=dict(zip(bracketing["arm"], bracketing["bracketed"], strict=True)))  # fmt: skip
    if is_tuned(runs):  # each arm's stable range and how much an off-optimum rate costs (the stability grid's measure)
        stable = lr_stability(runs, metric, tolerance=grid_value(runs, "ablation.stable_within"))
        summary = summary.merge(stable, on="arm", how="left")
    head = opening(summary, metric, **keys, alpha=alpha, bracketing=bracketing)
    head += cautions(
        summary, metric, **keys, aa=bool(grid_value(runs, "ablation.aa")), eval_average=how["eval_average"]
    )
    text = _markdown(summary, failures(runs), f"{multirun_dir.name}: {metric} by arm", head,
                     _notes(runs, keys["margin"], selection, state, metric, how["smooth"]))  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    summary.to_csv(out / "summary.csv", index=False)
    (out / "summary.md").write_text(text)
    paths = figures(runs, summary, out, metric, **how)
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
