"""Scaling-law fits: Chinchilla Approach 3 (parametric loss) and Approach 2 (IsoFLOP parabolas).

Approach 3 fits L(N, D) = E + A/N^α + B/D^β by minimising the Huber loss (δ = 1e-3) between log L and
LSE(a - α log N, b - β log D, e), with A = e^a, B = e^b, E = e^e (Hoffmann et al. 2022, App. D.2), running
L-BFGS from the best points of their initialisation grid. Approach 2 fits, per compute budget, a parabola of
loss against log N (and log D), takes its minimum, then fits N_opt ∝ C^a and D_opt ∝ C^b. Both report bootstrap
percentile intervals (points resampled with replacement; within each budget for Approach 2) and a status:
"converged", "not_converged" (optimiser failed, or a parabola has no interior minimum) or "too_few_points".
Approach 2's budgets: the runs' `ablation.compute_budget` labels where they have them (the IsoFLOP ladder's arms,
whose 6ND differs from the label by the rounding to whole steps), else 6ND rounded to 3 significant digits.
Usage: `python -m analysis.scaling multirun/scaling_ladder [--out scaling_fit] [--json]`.
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

# L-BFGS-B's tiny BLAS calls only lose to OpenBLAS threads (badly on a busy machine); must precede scipy's load
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np
import pandas as pd
from scipy.optimize import minimize
from scipy.special import logsumexp, softmax

HUBER_DELTA = 1e-3
# Hoffmann et al.'s grid: a, b in {0, 5, ..., 25}, e in {-1, -.5, ..., 1}, alpha, beta in {0, .5, ..., 2}
INIT_GRID = np.array(
    list(itertools.product(range(0, 30, 5), range(0, 30, 5), np.arange(-1, 1.5, 0.5), *[np.arange(0, 2.5, 0.5)] * 2)),
    dtype=float,
)  # columns: a, b, e, alpha, beta
PARAMS3 = ("E", "A", "B", "alpha", "beta")
CONVERGED, NOT_CONVERGED, TOO_FEW = "converged", "not_converged", "too_few_points"
FLOPS_PER_TOKEN = "train_flops_per_token"  # results.json: workbench.accounting's training FLOPs per token
BUDGET_LABEL = "ablation.compute_budget"  # set by the scaling_ladder grid's arms (ablations/scaling_ladder.yaml)


@dataclass
class Approach3Fit:
    E: float
    A: float
    B: float
    alpha: float
    beta: float
    status: str
    n_points: int
    objective: float = float("nan")
    ci: dict[str, tuple[float, float]] = field(default_factory=dict)

    def predict(self, n: np.ndarray, d: np.ndarray) -> np.ndarray:
        return self.E + self.A / np.asarray(n, float) ** self.alpha + self.B / np.asarray(d, float) ** self.beta

    def optimal(self, compute: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Loss-minimising (N, D) under C = 6 N D: N_opt = G (C/6)^(β/(α+β)), D_opt = (C/6)^(α/(α+β)) / G."""
        s = self.alpha + self.beta
        g = (self.alpha * self.A / (self.beta * self.B)) ** (1 / s)
        c6 = np.asarray(compute, float) / 6
        return g * c6 ** (self.beta / s), c6 ** (self.alpha / s) / g


@dataclass
class Approach2Fit:
    a: float  # N_opt ∝ C^a
    b: float  # D_opt ∝ C^b
    n_coef: float  # N_opt = n_coef * C^a
    d_coef: float
    status: str
    budgets: list[dict[str, float]]  # per budget: C, N_opt, D_opt, L_min
    ci: dict[str, tuple[float, float]] = field(default_factory=dict)

    def optimal(self, compute: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        c = np.asarray(compute, float)
        return self.n_coef * c**self.a, self.d_coef * c**self.b


# Approach 3 ---------------------------------------------------------------------------------------------------


def _huber_objective(theta: np.ndarray, log_n: np.ndarray, log_d: np.ndarray, log_l: np.ndarray):
    """Σ Huber(LSE - log L) / δ and its gradient; dividing by δ keeps scipy's tolerances meaningful."""
    a, b, e, alpha, beta = theta
    terms = np.stack([a - alpha * log_n, b - beta * log_d, np.full_like(log_n, e)])
    r = logsumexp(terms, axis=0) - log_l
    small = np.abs(r) <= HUBER_DELTA
    loss = np.where(small, 0.5 * r**2, HUBER_DELTA * (np.abs(r) - 0.5 * HUBER_DELTA)).sum() / HUBER_DELTA
    dr = np.where(small, r, HUBER_DELTA * np.sign(r)) / HUBER_DELTA
    w = softmax(terms, axis=0) * dr
    grad = np.array([w[0].sum(), w[1].sum(), w[2].sum(), -(w[0] * log_n).sum(), -(w[1] * log_d).sum()])
    return loss, grad


def _grid_objective(log_n: np.ndarray, log_d: np.ndarray, log_l: np.ndarray) -> np.ndarray:
    """The objective at every grid point at once, to choose where L-BFGS starts."""
    a, b, e, alpha, beta = (INIT_GRID[:, i : i + 1] for i in range(5))
    terms = np.stack([a - alpha * log_n, b - beta * log_d, np.broadcast_to(e, (len(INIT_GRID), len(log_n)))])
    r = np.abs(logsumexp(terms, axis=0) - log_l)
    return np.where(r <= HUBER_DELTA, 0.5 * r**2, HUBER_DELTA * (r - 0.5 * HUBER_DELTA)).sum(axis=1)


def _fit3_once(log_n, log_d, log_l, starts: np.ndarray, maxiter: int):
    best = None
    for x0 in starts:
        res = minimize(_huber_objective, x0, args=(log_n, log_d, log_l), jac=True, method="L-BFGS-B",
                       options={"maxiter": maxiter, "ftol": 1e-12, "gtol": 1e-8})  # fmt: skip
        if best is None or res.fun < best.fun:
            best = res
    return best


def _theta_to_params(theta: np.ndarray) -> dict[str, float]:
    a, b, e, alpha, beta = theta
    return {"E": float(np.exp(e)), "A": float(np.exp(a)), "B": float(np.exp(b)), "alpha": float(alpha),
            "beta": float(beta)}  # fmt: skip


def fit_approach3(
    n: Sequence[float], d: Sequence[float], loss: Sequence[float], *, n_starts: int = 20, n_boot: int = 100,
    level: float = 0.95, seed: int = 0, maxiter: int = 1000,
) -> Approach3Fit:  # fmt: skip
    """Fit L = E + A/N^α + B/D^β; `n_boot` = 0 skips the bootstrap."""
    log_n, log_d, log_l = (np.log(np.asarray(x, float)) for x in (n, d, loss))
    if len(log_l) < len(PARAMS3) + 1:
        return Approach3Fit(*[float("nan")] * 5, status=TOO_FEW, n_points=len(log_l))
    starts = INIT_GRID[np.argsort(_grid_objective(log_n, log_d, log_l))[:n_starts]]
    res = _fit3_once(log_n, log_d, log_l, starts, maxiter)
    fit = Approach3Fit(**_theta_to_params(res.x), status=CONVERGED if res.success else NOT_CONVERGED,
                       n_points=len(log_l), objective=float(res.fun))  # fmt: skip
    rng = np.random.default_rng(seed)
    samples = []
    for _ in range(n_boot):
        idx = rng.integers(0, len(log_l), len(log_l))
        boot = _fit3_once(log_n[idx], log_d[idx], log_l[idx], res.x[None], maxiter)  # warm start: the full fit
        samples.append(list(_theta_to_params(boot.x).values()))
    fit.ci = _percentiles(PARAMS3, np.array(samples), level)
    return fit


def _percentiles(names: Sequence[str], samples: np.ndarray, level: float) -> dict[str, tuple[float, float]]:
    if samples.size == 0:
        return {}
    q = 100 * np.array([(1 - level) / 2, (1 + level) / 2])
    return {name: tuple(float(v) for v in np.nanpercentile(samples[:, i], q)) for i, name in enumerate(names)}


# Approach 2 ---------------------------------------------------------------------------------------------------


def _parabola_min(x: np.ndarray, loss: np.ndarray) -> tuple[float, float] | None:
    """(argmin, min) of a parabola fitted to loss vs x; None unless convex with its minimum inside the data."""
    c2, c1, c0 = np.polyfit(x, loss, 2)
    if c2 <= 0 or not x.min() <= -c1 / (2 * c2) <= x.max():
        return None
    x_min = -c1 / (2 * c2)
    return x_min, c0 + c1 * x_min + c2 * x_min**2


def _fit2_once(compute, log_n, log_d, loss, span: float | None = None
               ) -> tuple[float, float, float, float, list[dict[str, float]], bool]:  # fmt: skip
    budgets, clean = [], True
    for c in np.unique(compute):
        sel = compute == c
        if span is not None:  # a parabola is a fair model of an IsoFLOP curve only near its minimum
            best = log_n[sel][np.argmin(loss[sel])]
            sel &= np.abs(log_n - best) <= np.log(span) + 1e-9
        if len(np.unique(log_n[sel])) < 3:
            continue
        n_min, d_min = _parabola_min(log_n[sel], loss[sel]), _parabola_min(log_d[sel], loss[sel])
        if n_min is None or d_min is None:
            clean = False
            continue
        budgets.append({"C": float(c), "N_opt": float(np.exp(n_min[0])), "D_opt": float(np.exp(d_min[0])),
                        "L_min": float(n_min[1])})  # fmt: skip
    if len(budgets) < 2:
        return float("nan"), float("nan"), float("nan"), float("nan"), budgets, clean
    log_c = np.log([b["C"] for b in budgets])
    a, log_n0 = np.polyfit(log_c, np.log([b["N_opt"] for b in budgets]), 1)
    b, log_d0 = np.polyfit(log_c, np.log([b["D_opt"] for b in budgets]), 1)
    return float(a), float(b), float(np.exp(log_n0)), float(np.exp(log_d0)), budgets, clean


def fit_approach2(
    n: Sequence[float], d: Sequence[float], loss: Sequence[float], compute: Sequence[float] | None = None, *,
    n_boot: int = 100, level: float = 0.95, seed: int = 0, span: float | None = None,
) -> Approach2Fit:  # fmt: skip
    """IsoFLOP fit; `compute` labels each run's budget (default 6ND, rounded to 3 significant digits). `span`: fit
    each budget's parabola only to sizes within that factor of its lowest-loss size (None: every size); over a wide
    ladder the IsoFLOP curve is asymmetric in log N and a parabola through all of it misplaces the minimum."""
    if span is not None and not span > 1:
        raise ValueError(f"span: got {span!r}; allowed: a factor > 1, or None for every size")
    n_arr, d_arr, l_arr = (np.asarray(x, float) for x in (n, d, loss))
    c_arr = _round_sig(6 * n_arr * d_arr) if compute is None else np.asarray(compute, float)
    log_n, log_d = np.log(n_arr), np.log(d_arr)
    a, b, n0, d0, budgets, clean = _fit2_once(c_arr, log_n, log_d, l_arr, span)
    status = TOO_FEW if len(budgets) < 2 else CONVERGED if clean else NOT_CONVERGED
    fit = Approach2Fit(a, b, n0, d0, status, budgets)
    if status == TOO_FEW:
        return fit
    rng = np.random.default_rng(seed)
    groups = [np.flatnonzero(c_arr == c) for c in np.unique(c_arr)]
    samples = []
    for _ in range(n_boot):
        idx = np.concatenate([rng.choice(g, len(g)) for g in groups])
        samples.append(_fit2_once(c_arr[idx], log_n[idx], log_d[idx], l_arr[idx], span)[:2])
    fit.ci = _percentiles(("a", "b"), np.array(samples), level)
    return fit


def _round_sig(x: np.ndarray, digits: int = 3) -> np.ndarray:
    exponent = np.floor(np.log10(x))
    return np.round(x / 10**exponent, digits - 1) * 10**exponent


# runs ---------------------------------------------------------------------------------------------------------


@dataclass
class ScalingFits:
    approach3: Approach3Fit
    approach2: Approach2Fit
    data: pd.DataFrame  # the points fitted: N, D, loss, C


def fit_runs(
    df: pd.DataFrame, *, n_col: str = "params.total", d_col: str = "tokens_seen", loss_col: str = "val_loss",
    compute_col: str | None = None, n_boot: int = 100, seed: int = 0, span: float | None = None,
) -> ScalingFits:  # fmt: skip
    """Fit both approaches to an `analysis.runs.load` frame; rows without positive finite N, D, loss (failed or
    unfinished runs) are dropped. Defaults are the training code's results.json names; N counts every parameter,
    embeddings included, as Hoffmann et al. do. `compute_col` labels budgets (default: BUDGET_LABEL if present);
    without a label, a run's budget is its training FLOPs as MFU counts them (results.json's
    `train_flops_per_token` x D, workbench.accounting's convention), and 6ND only for runs from before that key.
    `span` is Approach 2's (see fit_approach2)."""
    compute_col = compute_col or (BUDGET_LABEL if BUDGET_LABEL in df.columns else None)
    missing = [c for c in (n_col, d_col, loss_col, compute_col) if c is not None and c not in df.columns]
    if missing:
        raise ValueError(f"runs frame: missing column(s) {missing}; columns: {', '.join(map(str, df.columns))}")
    data = pd.DataFrame({"N": df[n_col], "D": df[d_col], "loss": df[loss_col]}).apply(pd.to_numeric, errors="coerce")
    if compute_col:
        data["C"] = pd.to_numeric(df[compute_col], errors="coerce")
    else:
        exact = pd.to_numeric(df.get(FLOPS_PER_TOKEN, pd.Series(np.nan, index=df.index)), errors="coerce") * data.D
        data["C"] = _round_sig(exact.fillna(6 * data.N * data.D).to_numpy(float))
    data = data[np.isfinite(data).all(axis=1) & (data > 0).all(axis=1)].reset_index(drop=True)
    return ScalingFits(
        fit_approach3(data.N, data.D, data.loss, n_boot=n_boot, seed=seed),
        fit_approach2(data.N, data.D, data.loss, data.C, n_boot=n_boot, seed=seed, span=span),
        data,
    )


def summary(fits: ScalingFits) -> str:
    f3, f2 = fits.approach3, fits.approach2
    lines = [f"{len(fits.data)} runs, {fits.data.C.nunique()} compute budgets",
             f"Approach 3 (L = E + A/N^alpha + B/D^beta): {f3.status}"]  # fmt: skip
    for name in PARAMS3:
        lo, hi = f3.ci.get(name, (float("nan"),) * 2)
        lines.append(f"  {name:>5} = {getattr(f3, name):.4g}  [{lo:.4g}, {hi:.4g}]")
    if f3.status != TOO_FEW:
        s = f3.alpha + f3.beta
        lines.append(f"  N_opt ∝ C^{f3.beta / s:.3f}, D_opt ∝ C^{f3.alpha / s:.3f}")
    lines.append(f"Approach 2 (IsoFLOP parabolas): {f2.status}, {len(f2.budgets)} usable budgets")
    for name in ("a", "b"):
        lo, hi = f2.ci.get(name, (float("nan"),) * 2)
        lines.append(f"  {'N' if name == 'a' else 'D'}_opt ∝ C^{getattr(f2, name):.3f}  [{lo:.3f}, {hi:.3f}]")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    from analysis import plots, runs
    from analysis.cli import InputError, Parser, at_least, user_errors

    parser = Parser(prog="python -m analysis.scaling", description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="run dirs or globs (see analysis.runs.load)")
    parser.add_argument("--n-col", default="params.total")
    parser.add_argument("--d-col", default="tokens_seen")
    parser.add_argument("--loss-col", default="val_loss")
    parser.add_argument("--compute-col", help=f"budget label column (default: {BUDGET_LABEL} if present, else 6ND)")
    parser.add_argument("--bootstrap", type=int, default=100, help="bootstrap resamples (0: none)")
    parser.add_argument("--span", type=float, help="Approach 2: fit sizes within this factor of each budget's best")
    parser.add_argument("--out", default="scaling_fit", help="plot path without extension (.png and .svg)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    with user_errors(ValueError):  # the flags', the run files' and fit_runs' own errors name what is wrong
        at_least("--bootstrap", args.bootstrap, 0)
        if args.span is not None and not args.span > 1:
            raise InputError(f"--span: got {args.span}; allowed: a factor > 1 (sizes within it of a budget's best)")
        df = runs.load(args.runs)
        if df.empty:
            raise InputError(f"runs: got {args.runs}, with no run (results.json or metrics.csv) under them; "
                             "allowed: run dirs or globs that match some")  # fmt: skip
        fits = fit_runs(df, n_col=args.n_col, d_col=args.d_col, loss_col=args.loss_col,
                        compute_col=args.compute_col, n_boot=args.bootstrap, span=args.span)  # fmt: skip
    paths = plots.scaling_fit(fits, args.out)
    if args.json:
        print(json.dumps({"approach3": asdict(fits.approach3), "approach2": asdict(fits.approach2),
                          "plots": [str(p) for p in paths]}, indent=2))  # fmt: skip
        return
    print(summary(fits))
    print("plots: " + ", ".join(map(str, paths)))


if __name__ == "__main__":
    main()
