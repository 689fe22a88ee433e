"""What an ablation grid compares its arms on (`ablation.metric`): one number per run, from its results.json or its
logged curve (metrics.csv), so that the sweeper's rounds and `analysis.report` measure alike.

The forms:
- `val_loss`, `val_bpb`, `val_accuracy`: the final value in results.json; with `ablation.eval_average: k`, the mean of
  the run's last k logged evaluations (`val/loss`, ...), which averages out some evaluation noise.
- `steps_to:<logged metric><op><threshold>` (e.g. `steps_to:train/loss<0.5`): the first logged step at which the
  metric's running mean over `ablation.smooth` logged points satisfies `<op> threshold`; a run that never does is
  censored at its last logged step. Lower is better (it learned sooner).
- `solved:<metric><op><threshold>`: 1 when the run's final value satisfies it, else 0 (a results.json key, or a
  logged metric's last value). Higher is better (the share of seeds solved).
- `auc:<logged metric>`: the mean of the logged curve over training (trapezoids over the steps it was logged at,
  divided by their span): a continuous measure of how fast it fell (or rose).
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

FINAL = ("val_loss", "val_bpb", "val_accuracy")
LOGGED = {"val_loss": "val/loss", "val_bpb": "val/bpb", "val_accuracy": "val/accuracy", "train_loss": "train/loss"}
OPS: dict[str, Callable[[float, float], bool]] = {"<=": operator.le, ">=": operator.ge, "<": operator.lt,
                                                  ">": operator.gt}  # fmt: skip
SMOOTH = 4
ALLOWED = ("val_loss, val_bpb, val_accuracy, steps_to:<logged metric><op><threshold> (e.g. steps_to:train/loss<0.5), "
           "solved:<metric><op><threshold> (e.g. solved:val_accuracy>=0.9), auc:<logged metric> (e.g. auc:val/loss); "
           "<op> one of <, <=, >, >=")  # fmt: skip
_THRESHOLD = re.compile(r"^(steps_to|solved):([^<>=\s:]+)(<=|>=|<|>)\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)$")
_AUC = re.compile(r"^auc:([^<>=\s:]+)$")
METRICS_FILE = "metrics.csv"


@dataclass(frozen=True)
class Measure:
    """A parsed `ablation.metric`: its `kind` (final, steps_to, solved, auc), the `source` it reads (a results.json
    key or a logged metric), and for steps_to/solved the comparison `op` and `threshold`."""

    text: str
    kind: str
    source: str
    op: str | None = None
    threshold: float | None = None

    @property
    def higher_is_better(self) -> bool:
        """A share solved and an accuracy rise as a model improves; steps to a threshold and losses fall."""
        if self.kind in ("solved", "steps_to"):
            return self.kind == "solved"
        return self.source.endswith("accuracy")

    @property
    def test(self) -> str:
        """The decision core's test: "rank" (steps_to: censored), "exact" (solved: 0/1), "t" (continuous)."""
        return {"steps_to": "rank", "solved": "exact"}.get(self.kind, "t")

    @property
    def unit(self) -> str:
        if self.kind == "steps_to":
            return " steps"
        return "" if self.kind == "solved" else " nats" if self.source.endswith("loss") else ""

    def met(self, value: np.ndarray) -> np.ndarray:
        """Where `value` satisfies the threshold (NaN: never)."""
        with np.errstate(invalid="ignore"):
            return OPS[self.op](np.asarray(value, float), self.threshold)


def parse(text: str, *, strict: bool = False) -> Measure:
    """`text` as a Measure; a ValueError naming `ablation.metric` and the allowed forms when it is none of them. A
    plain name is a final value: with `strict` (the schema) only val_loss, val_bpb, val_accuracy; otherwise any
    results.json key (`selection_loss` picks learning rates)."""
    text = str(text).strip()
    if m := _THRESHOLD.match(text):
        return Measure(text, m[1], m[2], m[3], float(m[4]))
    if m := _AUC.match(text):
        return Measure(text, "auc", m[1])
    if ":" not in text and text and not any(c in text for c in "<>= ") and (not strict or text in FINAL):
        return Measure(text, "final", text)
    raise ValueError(f"ablation.metric: got {text!r}; allowed: {ALLOWED}")


def is_metric(text: object) -> bool:
    """Whether `text` is an allowed `ablation.metric` (the schema's check)."""
    if not isinstance(text, str):
        return False
    try:
        parse(text, strict=True)
    except ValueError:
        return False
    return True


def read_metrics(run_dir: str | Path) -> pd.DataFrame:
    """A run's logged curve (metrics.csv, written by every run whatever the logger)."""
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        raise ValueError(f"{path}: no {METRICS_FILE}; allowed: an ablation.metric read from results.json, or run dirs "
                         "that logged their curve")  # fmt: skip
    return pd.read_csv(path)


def curve(metrics: pd.DataFrame, name: str) -> pd.DataFrame:
    """The (step, value) points where `name` was logged, by step, one per step (the last: a resumed run logs the
    rows before its checkpoint again)."""
    if name not in metrics:
        return pd.DataFrame({"step": [], "value": []})
    rows = metrics[["step", name]].dropna().rename(columns={name: "value"})
    return rows.drop_duplicates("step", keep="last").sort_values("step").reset_index(drop=True)


def steps_to(points: pd.DataFrame, m: Measure, smooth: int, last_step: float) -> tuple[float, bool]:
    """(the first step whose running mean over `smooth` points meets the threshold, False), or (`last_step`, True)
    when none does: censored."""
    running = points["value"].rolling(smooth, min_periods=smooth).mean().to_numpy()
    hit = np.flatnonzero(m.met(running))
    return (float(points["step"].iloc[hit[0]]), False) if len(hit) else (float(last_step), True)


def auc(points: pd.DataFrame) -> float:
    """The curve's mean over the steps it spans (trapezoids), or its one point."""
    x, y = points["step"].to_numpy(float), points["value"].to_numpy(float)
    if len(x) == 0:
        return np.nan
    return float(y[0]) if x[-1] == x[0] else float(np.trapezoid(y, x) / (x[-1] - x[0]))


def values(
    runs: pd.DataFrame, metric: str, *, smooth: int = SMOOTH, eval_average: int | None = None,
    reader: Callable[[str | Path], pd.DataFrame] = read_metrics,
) -> pd.DataFrame:  # fmt: skip
    """Per run (runs' index): `value` of `metric` (NaN for a run that did not complete or recorded none), whether it
    is `censored` (steps_to only), and its `horizon`, the last logged step (steps_to only: where a censored run
    stopped). Curves come from each completed run's `run_dir` (metrics.csv), read only when the metric needs them."""
    m = parse(metric)
    if smooth < 1 or (eval_average is not None and eval_average < 1):
        raise ValueError(f"ablation.smooth / ablation.eval_average: got {smooth!r} / {eval_average!r}; allowed: an "
                         "integer >= 1 (eval_average also null)")  # fmt: skip
    out = pd.DataFrame({"value": np.nan, "censored": False, "horizon": np.nan}, index=runs.index)
    done = runs["status"] == "completed" if "status" in runs else pd.Series(True, index=runs.index)
    averaged = m.kind in ("final", "solved") and eval_average is not None
    if (m.kind == "final" or (m.kind == "solved" and m.source in runs)) and not averaged:
        column = runs[m.source] if m.source in runs else pd.Series(np.nan, index=runs.index)
        final = pd.to_numeric(column, errors="coerce").where(done)
        out["value"] = final if m.kind == "final" else np.where(final.notna(), m.met(final).astype(float), np.nan)
        return out
    if "run_dir" not in runs:
        raise ValueError(f"ablation.metric: got {metric!r}, which reads each run's {METRICS_FILE}; allowed: runs with "
                         "a run_dir (analysis.runs.load gives one)")  # fmt: skip
    name = LOGGED.get(m.source, m.source)
    for i in runs.index[done]:
        logged = reader(runs.at[i, "run_dir"])
        points = curve(logged, name)
        if points.empty:
            continue
        if m.kind == "steps_to":
            last = float(pd.to_numeric(logged["step"], errors="coerce").max())
            out.loc[i, ["value", "censored", "horizon"]] = (*steps_to(points, m, smooth, last), last)
        elif m.kind == "auc":
            out.at[i, "value"] = auc(points)
        else:  # final or solved on a logged curve: its last value, or the mean of its last eval_average values
            final = float(points["value"].tail(eval_average or 1).mean())
            out.at[i, "value"] = final if m.kind == "final" else float(m.met(final))
    out["censored"] = out["censored"].astype(bool)
    return out


def at_common_horizon(
    value: np.ndarray, censored: np.ndarray, horizon: np.ndarray, base: np.ndarray, base_censored: np.ndarray,
    base_horizon: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Paired steps_to differences (arm - baseline) at each pair's common horizon H = the earlier of the two last
    steps: a crossing after H, or none, counts as censored at H (ranked last), so a shorter run is not favoured.
    Returns the differences and where either run of a pair is censored at H."""
    h = np.fmin(horizon, base_horizon)
    late_a, late_b = censored | (value > h), base_censored | (base > h)
    a, b = np.where(late_a, h, value), np.where(late_b, h, base)
    return a - b, (late_a | late_b) & np.isfinite(a - b)
