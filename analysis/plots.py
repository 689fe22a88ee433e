"""The plots the report and the notebooks share, each saved as PNG and SVG.

Figures are built with `matplotlib.figure.Figure` and saved through the Agg (and SVG) canvases, never pyplot,
so importing this module changes no global backend and works headless. Every function takes `path` without
extension (an extension given is replaced) and returns the two files written.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from analysis.kv_cache import kv_cache_bytes, kv_cache_bytes_all_global
from workbench.config import ModelConfig

if TYPE_CHECKING:
    from analysis.scaling import ScalingFits

GIB = 2**30


def save(fig: Figure, path: str | Path) -> list[Path]:
    stem = Path(path).with_suffix("")
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = [stem.with_name(f"{stem.name}.{ext}") for ext in ("png", "svg")]
    for p in paths:
        fig.savefig(p, dpi=150, bbox_inches="tight")
    return paths


def loss_curves(
    curves: Mapping[str, pd.DataFrame], path: str | Path, *, x: str = "step", y: Sequence[str] = ("train/loss",
    "val/loss"), logx: bool = False, title: str = "", marks: Mapping[str, Sequence[float]] | None = None,
    threshold: float | None = None,
) -> list[Path]:  # fmt: skip
    """One line per (run, metric); rows where a metric was not logged (NaN in metrics.csv) are skipped. `marks`:
    per label, steps to mark on its first metric's line at `threshold` (a steps_to measure's crossings), drawn in
    that line's colour; the threshold as a dotted line."""
    fig = Figure(figsize=(7, 4.5))
    ax = fig.subplots()
    for label, df in curves.items():
        for metric in (m for m in y if m in df.columns):
            rows = df[[x, metric]].dropna()
            line = ax.plot(rows[x], rows[metric], label=f"{label} {metric}", ls="-" if metric == y[0] else "--")[0]
            steps = (marks or {}).get(label, [])
            if metric == y[0] and len(steps) and threshold is not None:
                ax.plot(steps, [threshold] * len(steps), "v", color=line.get_color(), ms=7,
                        label=f"{label} crossings")  # fmt: skip
    if threshold is not None:
        ax.axhline(threshold, color="grey", ls=":", lw=1)
    ax.set(xlabel=x, ylabel="loss", title=title, xscale="log" if logx else "linear")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    return save(fig, path)


def forest(
    deltas: pd.DataFrame, path: str | Path, *, label: str = "label", delta: str = "delta", lo: str = "lo",
    hi: str = "hi", xlabel: str = "Δ val loss vs baseline (lower is better)",
) -> list[Path]:  # fmt: skip
    """Each ablation's effect with its confidence interval; red where the interval excludes zero (no difference)."""
    rows = deltas.reset_index(drop=True)
    fig = Figure(figsize=(7, 0.8 + 0.4 * len(rows)))
    ax = fig.subplots()
    y = np.arange(len(rows))[::-1]
    err = np.vstack([rows[delta] - rows[lo], rows[hi] - rows[delta]])
    excludes_zero = (rows[lo] > 0) | (rows[hi] < 0)
    ax.errorbar(rows[delta], y, xerr=err, fmt="none", ecolor="grey", capsize=3)
    ax.scatter(rows[delta], y, c=np.where(excludes_zero, "C3", "C0"), zorder=3)
    ax.axvline(0, color="black", lw=0.8)
    ax.set(yticks=y, yticklabels=rows[label], xlabel=xlabel)
    ax.grid(axis="x", alpha=0.3)
    return save(fig, path)


def kv_bytes_vs_context(
    configs: Mapping[str, ModelConfig], path: str | Path, *, contexts: Sequence[int] | None = None,
    dtype: str = "bfloat16",
) -> list[Path]:  # fmt: skip
    """KV-cache GiB against context for each config as built (solid) and with every layer global (dashed)."""
    contexts = list(contexts or np.unique(np.logspace(8, 17, 37, base=2).astype(int)))
    fig = Figure(figsize=(7, 4.5))
    ax = fig.subplots()
    for i, (name, cfg) in enumerate(configs.items()):
        ax.plot(contexts, [kv_cache_bytes(cfg, c, dtype=dtype) / GIB for c in contexts], color=f"C{i}", label=name)
        ax.plot(contexts, [kv_cache_bytes_all_global(cfg, c, dtype=dtype) / GIB for c in contexts], color=f"C{i}",
                ls="--", label=f"{name} (all global)")  # fmt: skip
    ax.set(xscale="log", yscale="log", xlabel="context (tokens)", ylabel=f"KV cache (GiB, {dtype}, batch 1)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize="small")
    return save(fig, path)


def pareto_frontier(x: np.ndarray, y: np.ndarray, higher_is_better: bool = False) -> np.ndarray:
    """Indices of the points no other point beats on both x (lower is better) and y (lower is better, or higher
    where `higher_is_better`), sorted by x."""
    y = -np.asarray(y, dtype=float) if higher_is_better else y
    order = np.lexsort((y, x))
    keep, best = [], np.inf
    for i in order:
        if y[i] < best:
            keep.append(i)
            best = y[i]
    return np.array(keep, dtype=int)


def loss_vs_kv_pareto(
    runs: pd.DataFrame, path: str | Path, *, x: str = "kv_bytes", y: str = "val_loss", label: str | None = None,
    ylabel: str | None = None, higher_is_better: bool = False,
) -> list[Path]:  # fmt: skip
    """Quality against KV-cache memory, with the frontier of runs no other run beats on both (less memory, and a
    lower `y`, or a higher one where `higher_is_better`: an accuracy, or a learning speed such as its area)."""
    xs, ys = runs[x].to_numpy(float), runs[y].to_numpy(float)
    front = pareto_frontier(xs, ys, higher_is_better)
    fig = Figure(figsize=(7, 4.5))
    ax = fig.subplots()
    ax.scatter(xs / GIB, ys, color="C0", alpha=0.7)
    ax.step(xs[front] / GIB, ys[front], where="post", color="C3", label="Pareto frontier")
    if label is not None:
        for xi, yi, text in zip(xs, ys, runs[label], strict=True):
            ax.annotate(str(text), (xi / GIB, yi), fontsize="x-small", xytext=(3, 3), textcoords="offset points")
    ax.set(xscale="log", xlabel="KV cache (GiB)", ylabel=ylabel or y)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize="small")
    return save(fig, path)


def scaling_fit(fits: ScalingFits, path: str | Path) -> list[Path]:
    """Left: loss vs N per compute budget, with Approach 3's IsoFLOP curves. Right: N_opt vs C, both approaches."""
    data, f3, f2 = fits.data, fits.approach3, fits.approach2
    fig = Figure(figsize=(12, 4.5))
    left, right = fig.subplots(1, 2)
    budgets = np.unique(data.C)
    for i, c in enumerate(budgets):
        sel = data["C"] == c
        left.scatter(data.N[sel], data.loss[sel], color=f"C{i % 10}", label=f"C = {c:.2g}")
        if f3.status != "too_few_points":
            n = np.logspace(np.log10(data.N[sel].min()) - 0.2, np.log10(data.N[sel].max()) + 0.2, 50)
            left.plot(n, f3.predict(n, c / (6 * n)), color=f"C{i % 10}", alpha=0.6)
    left.set(xscale="log", xlabel="parameters N", ylabel="loss", title=f"Approach 3 ({f3.status})")
    c_range = np.logspace(np.log10(budgets.min()) - 0.5, np.log10(budgets.max()) + 0.5, 50) if len(budgets) else []
    if f2.budgets:
        right.scatter(
            [b["C"] for b in f2.budgets], [b["N_opt"] for b in f2.budgets], color="black", label="parabola minima"
        )
    if f2.status != "too_few_points":
        right.plot(c_range, f2.optimal(c_range)[0], color="C1", label=f"Approach 2: N_opt ∝ C^{f2.a:.2f}")
    if f3.status != "too_few_points":
        a3 = f3.beta / (f3.alpha + f3.beta)
        right.plot(c_range, f3.optimal(c_range)[0], color="C2", ls="--", label=f"Approach 3: N_opt ∝ C^{a3:.2f}")
    right.set(xscale="log", yscale="log", xlabel="compute C (FLOPs)", ylabel="N_opt", title="compute-optimal size")
    for ax in (left, right):
        ax.grid(alpha=0.3, which="both")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize="x-small")
    return save(fig, path)


def lr_sensitivity_figure(
    table: pd.DataFrame, *, best: Mapping[str, float] | None = None, ylabel: str = "val_loss", title: str = "",
) -> Figure:  # fmt: skip
    """Loss against learning rate per arm (`table`: arm, lr, mean, ci_lo, ci_hi, diverged, as from
    `analysis.report.lr_table`): mean over seeds with its interval on a log-lr axis, each arm's chosen (`best`) rate
    ringed, and every rate at which a run failed or ended at or above the starting loss marked 'x' along the top
    (its loss is missing or off the scale), so a reader sees how far the optimum sits from the cliff."""
    fig = Figure(figsize=(7, 4.5))
    ax = fig.subplots()
    best = best or {}
    for i, (arm, g) in enumerate(table.groupby("arm", sort=False)):
        color = f"C{i % 10}"
        ok = g[~g["diverged"] & g["mean"].notna()].sort_values("lr")
        err = np.vstack([ok["mean"] - ok["ci_lo"].fillna(ok["mean"]), ok["ci_hi"].fillna(ok["mean"]) - ok["mean"]])
        ax.errorbar(ok["lr"], ok["mean"], yerr=err, marker="o", capsize=3, color=color, label=arm)
        at_best = ok[ok["lr"] == best.get(arm)]
        ax.scatter(at_best["lr"], at_best["mean"], s=160, facecolors="none", edgecolors=color, zorder=3)
        bad = g.loc[g["diverged"], "lr"].sort_values().to_numpy(float)
        if len(bad):  # near the top in axes units, one row per arm so equal rates stay apart
            ax.scatter(bad, np.full(len(bad), 0.97 - 0.04 * i), marker="x", s=70, color=color,
                       transform=ax.get_xaxis_transform(), zorder=3)  # fmt: skip
    ax.set_xlim(table["lr"].min() / 1.5, table["lr"].max() * 1.5)  # the edges' rates too: they have no data points
    ax.scatter([], [], marker="x", color="grey", label="diverged (failed or at/above the start)")
    ax.scatter([], [], s=160, facecolors="none", edgecolors="grey", label="chosen lr (best on selection)")
    ax.set(xscale="log", xlabel="learning rate", ylabel=f"{ylabel} (mean, 95% CI)", title=title)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize="small")
    return fig
