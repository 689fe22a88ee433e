"""What the ablation-grid notebooks share: get a grid's runs (train them in quick mode, or read the results store),
summarise them with `analysis.report.summarize` (mean ± 95% CI over seeds, paired Δ vs the baseline arm, p, Holm's
p, MDE and the decision, also Δ as perplexity) and draw the quality vs KV-memory Pareto.

Quick mode (what CI runs) trains a few arms of the grid's `ablation.quick=true` mode in a temporary sweep dir, in a
subprocess of the training CLI with the basic launcher and one thread: a joblib worker's start-up costs more than
a quick job. Full mode reads `multirun/<grid>`, written by the command `full_command` spells out.
"""

from __future__ import annotations

import atexit
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from matplotlib.figure import Figure
from omegaconf import OmegaConf

from analysis.plots import pareto_frontier
from analysis.report import (
    ARM,
    SWEEP_STATE,
    baseline_arm,
    check_one_study,
    margin_and_control,
    selection_metric,
    summarize,
)
from analysis.runs import load, load_metrics
from workbench.blocks.patterns import GLOBAL
from workbench.config import ModelConfig
from workbench.training.grid import arm_table

REPO = Path(__file__).resolve().parents[1]
ABLATIONS = REPO / "ablations"
TOKEN_CACHE = REPO / ".cache" / "workbench" / "tokens"  # shared by every notebook, wherever its kernel runs
# Full mode: a modest but real study on a 2-core CPU (tiny-sized, 200 steps of 8 x 128 tokens, 3 seeds).
FULL_OVERRIDES = (
    "model=tiny", "model.n_layers=8", "model.window=32", "data.seq_len=128", "data.batch_size=8",
    "data.val_tokens=16384", "trainer.max_steps=200", "trainer.val_check_interval=100", "trainer.log_every_n_steps=10",
    "optim.warmup_steps=20", "logger=none", "trainer.progress_bar=false", "threads=1",
)  # fmt: skip


# The redesigned studies (#18): experiment=study_cpu's model and budget, 2 joblib jobs x 1 thread
STUDY_OVERRIDES = ("experiment=study_cpu", "hydra/launcher=joblib")
STUDY_RESULTS = REPO / "notebooks" / "results"  # committed copies of the studies' runs (archive_runs): full mode
KEPT = ("results.json", "config.yaml", "metrics.csv")  # what a committed run keeps: no checkpoints, no logs


@dataclass
class GridResult:
    runs: pd.DataFrame  # one row per run (analysis.runs.load), with val_ppl = exp(val_loss)
    summary: pd.DataFrame  # one row per arm: analysis.report.summarize of val_loss, plus ppl_* columns
    baseline: str
    pareto: Figure  # val perplexity (mean, 95% CI) vs KV-cache bytes at kv_reference_context
    source: Path  # the sweep dir the runs were read from


def grids() -> list[str]:
    return sorted(p.stem for p in ABLATIONS.glob("*.yaml") if not p.stem.startswith("_"))


def grid_arms(grid: str) -> list[str]:
    """The arms `ablations/<grid>.yaml` defines (its `arms`, then the product of its `factors`, as
    `workbench.training.grid.arm_table` expands them); a ValueError naming the allowed grids for an unknown one."""
    if grid not in grids():
        raise ValueError(f"grid: got {grid!r}; allowed: {', '.join(grids())}")
    return list(arm_table(grid_spec(grid)))


def grid_spec(grid: str) -> dict:
    """The `ablation` node of `ablations/<grid>.yaml` as written (full mode: no quick_overrides applied), with
    `arms` and `factors` present (empty where the grid has none)."""
    spec = yaml.safe_load((ABLATIONS / f"{grid}.yaml").read_text())["ablation"]
    return {**spec, "arms": spec.get("arms") or {}, "factors": spec.get("factors") or {}}


def _check_arms(grid: str, arms: Sequence[str] | None) -> None:
    allowed = grid_arms(grid)
    unknown = [a for a in arms or () if a not in allowed]
    if unknown:
        raise ValueError(f"arms: got {unknown} for grid {grid!r}; allowed: {', '.join(allowed)}")


def _arm_override(arms: Sequence[str] | None) -> list[str]:
    return [f"ablation.arm={','.join(arms)}"] if arms else []


def quick_args(grid: str, sweep_dir: str | Path, arms: Sequence[str] | None = None,
                    seeds: Sequence[int] = (0, 1)) -> list[str]:  # fmt: skip
    """The CLI arguments of a quick run of `grid` (its `ablation.quick=true` mode) into `sweep_dir`."""
    seed_list = ",".join(map(str, seeds))
    return [
        "--multirun", f"+ablation={grid}", "ablation.quick=true", f"ablation.quick_seeds=[{seed_list}]",
        *_arm_override(arms), f"hydra.sweep.dir={sweep_dir}", f"data.cache_dir={TOKEN_CACHE}", "threads=1",
    ]  # fmt: skip


def full_command(grid: str, arms: Sequence[str] | None = None, extra: Sequence[str] = (),
                 base: Sequence[str] = FULL_OVERRIDES) -> str:  # fmt: skip
    """The shell command whose runs full mode reads; run it from the repository root. `extra` overrides replace the
    `base` overrides of the same key (STUDY_OVERRIDES: the redesigned studies, into multirun/study_<grid>)."""
    _check_arms(grid, arms)
    merged = {o.split("=", 1)[0]: o for o in [*base, *extra]}
    args = ["--multirun", f"+ablation={grid}", *merged.values(), *_arm_override(arms)]
    return "OMP_NUM_THREADS=1 python -m workbench.train " + " ".join(map(shlex.quote, args))


def archive_runs(sweep_dir: str | Path, dest: str | Path) -> int:
    """Copy each finished run's KEPT files (and the sweep's summary.* and sweep.json) from `sweep_dir` into `dest`,
    run dir by run dir, so a study's numbers are committed without its checkpoints; returns the runs copied. A run
    without a results.json (still training, or killed) is skipped: a relaunch of the grid finishes it."""
    sweep_dir, dest = Path(sweep_dir), Path(dest)
    copied = 0
    for results in sorted(sweep_dir.glob("*/results.json")):
        run = dest / results.parent.name
        run.mkdir(parents=True, exist_ok=True)
        for name in KEPT:
            if (results.parent / name).is_file():
                shutil.copy2(results.parent / name, run / name)
        copied += 1
    for kept in [*sweep_dir.glob("summary.*"), *sweep_dir.glob(SWEEP_STATE)]:  # the looks and alpha the report needs
        shutil.copy2(kept, dest / kept.name)
    return copied


def train_cli(args: Sequence[str], timeout_s: float | None = None) -> None:
    """Run `python -m workbench.train <args>` from the repository root on one thread; raise with its output's tail."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    proc = subprocess.run([sys.executable, "-m", "workbench.train", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout_s)  # fmt: skip
    if proc.returncode:
        tail = (proc.stdout + proc.stderr)[-3000:]
        raise RuntimeError(f"python -m workbench.train {' '.join(args)} exited with {proc.returncode}:\n{tail}")


def _temp_dir(prefix: str) -> Path:
    path = Path(tempfile.mkdtemp(prefix=prefix))
    atexit.register(shutil.rmtree, path, ignore_errors=True)  # the kernel's exit removes the quick runs
    return path


def load_grid(sweep_dir: str | Path) -> pd.DataFrame:
    """The grid's runs, with val_ppl; a ValueError when one arm x seed (x lr, in a tuned grid) appears twice (two
    studies in one dir)."""
    runs = load(str(sweep_dir))
    if runs.empty or ARM not in runs:
        raise FileNotFoundError(f"no ablation runs under {sweep_dir}")
    runs = runs[runs[ARM].notna()].reset_index(drop=True)
    check_one_study(runs, sweep_dir)
    return with_ppl(runs)


def with_ppl(runs: pd.DataFrame) -> pd.DataFrame:
    """`runs` with val_ppl = exp(val_loss), the per-token perplexity (NaN where the run has no loss)."""
    loss = pd.to_numeric(runs["val_loss"], errors="coerce") if "val_loss" in runs else np.nan
    return runs.assign(val_ppl=np.exp(loss))


def summarize_grid(runs: pd.DataFrame, baseline: str) -> pd.DataFrame:
    """analysis.report.summarize of val_loss per arm (with the grid's ablation.margin, and its ablation.control where
    that arm was run), plus the same statistics of val perplexity (ppl_*), at the learning rates picked for the loss."""
    runs = with_ppl(runs)
    selection = selection_metric(runs, "val_loss")
    keys = margin_and_control(runs)
    if keys["control"] not in set(runs[ARM]):
        keys["control"] = None  # a notebook's quick subset of the arms without the control: no sensitivity to say
    loss = summarize(runs, baseline, "val_loss", **keys, selection=selection)
    ppl = summarize(runs, baseline, "val_ppl", selection=selection)
    cols = ["mean", "ci_lo", "ci_hi", "delta", "delta_lo", "delta_hi", "p_value"]
    return loss.join(ppl[cols].add_prefix("ppl_"))


def pareto_figure(summary: pd.DataFrame, title: str = "") -> Figure:
    """Val perplexity (mean with its 95% CI) vs KV-cache bytes per arm, and the frontier of arms no other beats."""
    s = summary.dropna(subset=["ppl_mean", "kv_bytes"]).reset_index(drop=True)
    fig = Figure(figsize=(6, 3.6), dpi=72)
    ax = fig.subplots()
    x, y = s["kv_bytes"].to_numpy(float) / 2**20, s["ppl_mean"].to_numpy(float)
    err = np.vstack([y - s["ppl_ci_lo"].fillna(s["ppl_mean"]), s["ppl_ci_hi"].fillna(s["ppl_mean"]) - y])
    ax.errorbar(x, y, yerr=err, fmt="o", capsize=3)
    front = pareto_frontier(x, y)
    ax.step(x[front], y[front], where="post", color="C3", label="Pareto frontier (means)")
    for xi, yi, arm in zip(x, y, s["arm"], strict=True):
        ax.annotate(arm, (xi, yi), fontsize="small", xytext=(4, 4), textcoords="offset points")
    ax.set(xscale="log", xlabel="KV cache at 32k tokens (MiB, bf16, batch 1)", ylabel="val perplexity", title=title)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize="small")
    return fig


def run_or_load_grid(
    grid: str, quick: bool, multirun_dir: str | Path | None = None, *, arms: Sequence[str] | None = None,
    seeds: Sequence[int] = (0, 1), extra: Sequence[str] = (),
) -> GridResult:  # fmt: skip
    """Quick: train `arms` (default all) x `seeds` of the grid's quick mode in `multirun_dir` (default: a temporary
    dir), with `extra` CLI overrides; full: read `multirun_dir` (default multirun/<grid>). Either way, summarise and
    draw the Pareto."""
    _check_arms(grid, arms)
    if quick:
        sweep = Path(multirun_dir) if multirun_dir else _temp_dir(f"wb_{grid}_")
        train_cli([*quick_args(grid, sweep, arms, seeds), *extra])
    else:
        sweep = Path(multirun_dir) if multirun_dir else REPO / "multirun" / grid
        if not sweep.is_dir():
            raise FileNotFoundError(f"{sweep} does not exist; make it with: {full_command(grid, arms)}")
    runs = load_grid(sweep)
    baseline = baseline_arm(runs)
    summary = summarize_grid(runs, baseline)
    title = f"{grid} ({'quick' if quick else 'full'} mode)"
    return GridResult(runs, summary, baseline, pareto_figure(summary, title), sweep)


def _pm(mean: float, lo: float, hi: float, fmt: str) -> str:
    """'mean ± half-width'; the mean alone without an interval (one seed), '' without a value."""
    if np.isnan(mean):
        return ""
    return f"{mean:{fmt}}" if np.isnan(lo) else f"{mean:{fmt}} ± {(hi - lo) / 2:{fmt}}"


def _interval(mean: float, lo: float, hi: float, fmt: str) -> str:
    """'+Δ [lo, hi]'; '' without a value (no seed shared with the baseline, or the baseline not run)."""
    if np.isnan(mean):
        return ""
    return f"{mean:+{fmt}}" if np.isnan(lo) else f"{mean:+{fmt}} [{lo:+{fmt}}, {hi:+{fmt}}]"


def display_table(summary: pd.DataFrame) -> pd.DataFrame:
    """One readable row per arm: val loss and perplexity as mean ± CI half-width, Δ vs baseline [95% CI], p, Holm's
    p, the MDE and the decision (analysis.report.summarize)."""
    rows = {}
    for _, r in summary.iterrows():
        rows[r["arm"] + (" (baseline)" if r["baseline"] else "")] = {
            "seeds": f"{r['n']}" + (f" ({r['failed']} failed)" if r["failed"] else ""),
            "val loss": _pm(r["mean"], r["ci_lo"], r["ci_hi"], ".4f"),
            "Δ loss": "" if r["baseline"] else _interval(r["delta"], r["delta_lo"], r["delta_hi"], ".4f"),
            "val ppl": _pm(r["ppl_mean"], r["ppl_ci_lo"], r["ppl_ci_hi"], ".3f"),
            "Δ ppl": "" if r["baseline"] else _interval(r["ppl_delta"], r["ppl_delta_lo"], r["ppl_delta_hi"], ".3f"),
            "p (Δ loss)": "" if r["baseline"] or np.isnan(r["p_value"]) else f"{r['p_value']:.3g}",
            "p_holm": "" if r["baseline"] or np.isnan(r["p_holm"]) else f"{r['p_holm']:.3g}",
            "MDE (loss)": "" if r["baseline"] or np.isnan(r["mde"]) else f"{r['mde']:.3g}",
            "decision": "" if r["baseline"] else r["decision"],
            "KV MiB @32k": f"{r['kv_bytes'] / 2**20:,.2f}",
            "params": f"{r['params']:,.0f}",
        }
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("arm")


def mean_curves(runs: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """Per arm and step, the mean over completed seeds of the `columns` of metrics.csv that exist (NaN: not logged)."""
    frames = []
    for _, run in runs[runs["status"] == "completed"].iterrows():
        m = load_metrics(run["run_dir"])
        present = [c for c in columns if c in m.columns]
        frames.append(m[["step", *present]].groupby("step", as_index=False).mean().assign(arm=run[ARM]))
    out = pd.concat(frames) if frames else pd.DataFrame(columns=["arm", "step"])
    out = out.reindex(columns=["arm", "step", *columns])
    return out.groupby(["arm", "step"], sort=False).mean().reset_index()


SETTINGS = {"model.d_model": "d_model", "model.n_layers": "layers", "model.window": "window", "data.seq_len": "seq_len",
            "data.batch_size": "batch", "trainer.max_steps": "steps", "optim.lr": "lr", "seed": "seeds"}  # fmt: skip


def study_settings(runs: pd.DataFrame) -> pd.Series:
    """What the study trained: each setting's distinct values over the runs (an arm may vary some of them)."""
    return pd.Series(
        {
            label: ", ".join(map(str, sorted(runs[col].dropna().unique())))
            for col, label in SETTINGS.items()
            if col in runs
        }
    )


def model_config(run_dir: str | Path) -> ModelConfig:
    """The model a run trained, from its resolved config.yaml."""
    cfg = OmegaConf.load(Path(run_dir) / "config.yaml")
    return ModelConfig.from_dict(OmegaConf.to_container(cfg.model, resolve=True))


def layer_string(cfg: ModelConfig) -> str:
    """'LLLLLG...': local (L) and global (G) layers, first layer first."""
    return "".join("G" if t == GLOBAL else "L" for t in cfg.layer_types)
