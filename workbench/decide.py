"""An ablation grid's statistics and decisions: which arm is better, worse or equivalent to the baseline, whether each
arm's learning rate was bracketed, and how many looks at the seeds the error rate is spread over.

The library holds them (plain numpy/scipy/pandas) so that the grid's sweeper, which decides after each round whether
to add seeds or rates, and `analysis.report`, which writes the tables, apply one rule.

**Decision rule.** Each arm is compared with the baseline over the seeds both completed (paired by seed:
d = arm - baseline). Two hypotheses per arm: H0 "no difference" (two-sided paired t-test, p_d) and, with
`margin` > 0, HE "|Δ| >= margin" (TOST, p_e = the larger of the two one-sided p's). They are tested together in one
step-down (Holm's, with Shaffer's count of how many hypotheses can be true at once): sort all p's; the r-th is
rejected, given every earlier one was, when p < alpha / t_r, t_r = the arms in the family not yet cleared, an arm being
cleared once all its hypotheses are rejected. H0 and HE of one arm cannot both be true, so t_r bounds the number of
true hypotheses left and the family-wise error is at most alpha under any dependence (Shaffer 1986). Without a margin
this is Holm's procedure over the arms. H0 rejected: better/worse by the sign of the mean; else HE rejected:
equivalent; else inconclusive. Every paired difference exactly 0: equivalent (the arms computed the same thing).
`p_holm` is H0's adjusted p. A wrong call of any kind on an arm, also a wrong sign, lies inside the rejection of one
true one-sided hypothesis at the same level, so the union-bound argument below covers all three calls.

**Looks (seeds until decided).** The sweeper runs `n_first` seeds, then gives `seed_step` more to every arm still
inconclusive, up to `max_seeds`: K = len(planned_looks(...)) looks, fixed before the first run. Each look tests at
alpha / K (alpha spent evenly: alpha * k / K after look k). An arm decided at a look keeps its decision and gets no
more seeds; at later looks it stays in the family's count t with its hypotheses unrejectable (p = 1, a valid p-value),
so each look's step-down is a valid test of the potential data of that look (every arm's first n_k seeds, whether or
not they were run). The chance of any wrong call is then at most the sum over looks, K * alpha / K = alpha, by the
union bound, whatever the dependence between looks and whichever arms stop when. A re-test at alpha at every look
(what adding seeds by hand and re-reading the report does) has no such bound; tests/workbench/test_decide.py
measures both by simulation (docs/decisions.md).

**Measures.** `summarize` measures each run by `workbench.measures` (`ablation.metric`: a final value, `auc:`,
`steps_to:` or `solved:`). Continuous measures take the paired t above; steps_to the exact signed-rank test with
censored runs ranked last at each pair's common horizon (equivalence only without censored pairs); solved McNemar's
exact test (Fisher's for an arm with unpaired runs, no equivalence). All share the step-down and the looks.

**Bracketing.** An arm's rates bracket its optimum when its best rate (on the selection split) has a tried rate on
each side, or a side is closed by a rate that diverged (a failed run or a loss at or above ln(vocab_size), the loss of
the uniform guess) or by the bound the next rate would cross. An arm whose best rate is an open edge is `unbracketed`
and gets no better/worse/equivalent call, nor does any arm when the baseline is unbracketed: a comparison at a rate
that is not the arm's optimum measures the rate, not the arm.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import cache
from typing import Any

import numpy as np
import pandas as pd
from scipy import optimize, stats

from workbench import measures

ARM, METRIC, LR, SELECTION = "ablation.arm", "val_loss", "optim.lr", "selection_loss"
CURVE_KINDS = ("steps_to", "auc")  # measures of how fast a run learned, read from its logged curve
ALPHA, POWER = 0.05, 0.8
COMPLETED = "completed"
LR_BOUNDS = (1e-6, 10.0)
SINGLE_RATE_STEP = 3.0
CALLS = np.array(["inconclusive", "better", "worse", "equivalent"])  # the core's codes 0..3
COLUMNS = ["arm", "baseline", "n", "failed", "best_lr", "mean", "std", "ci_lo", "ci_hi", "delta", "delta_lo",
           "delta_hi", "p_value", "p_holm", "mde", "decision", "sensitive", "sd_d", "tost_lo", "tost_hi", "n_pairs",
           "identical", "lrs_tried", "bracketed", "n_seeds", "looks", "kv_bytes", "params", "seed_sd", "eval_se",
           "censored", "test"]  # fmt: skip
TESTS = {"t": "paired t", "rank": "paired signed-rank, censored last", "exact": "McNemar exact",
         "fisher": "Fisher exact (unpaired)"}  # fmt: skip
MAX_EXACT_PAIRS = 16  # above, the signed-rank test's permutation null is its normal approximation
AA_SUFFIX = "_aa"
CENSORED, HORIZON = "censored", "horizon"  # summarize's per-run columns beside the measured metric
EVAL_SE = "val_loss_se"


def aa_arm(baseline: str) -> str:
    """The A/A arm's name (`ablation.aa`): the baseline's config under a name of its own."""
    return f"{baseline}{AA_SUFFIX}"


def higher_is_better(metric: str) -> bool:
    """Accuracies and shares solved rise as a model improves; losses, bpb, perplexity and steps to a threshold fall."""
    try:
        return measures.parse(metric).higher_is_better
    except ValueError:
        return metric.endswith("accuracy")


def selection_metric(runs: pd.DataFrame, metric: str) -> str:
    """What picks each arm's learning rate: `selection_loss` (a held-out selection split) where the runs have it,
    else `metric` itself, the reported split, whose numbers are then optimistic (chosen and reported on one split).
    A learning-speed measure (steps_to:, auc:) picks on itself: on a task every good rate learns, the final loss of
    any split is the same floor at each of them and cannot see how fast (the pick is optimistic alike for every
    arm); `runs` must then hold the measure's column (`measures.values`)."""
    if measures.parse(metric).kind in CURVE_KINDS:
        return metric
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


def paired(arm: pd.DataFrame, base: pd.DataFrame, metric: str, alpha: float = ALPHA) -> dict[str, Any]:
    """Δ = arm - baseline paired by seed: mean, 95% interval (delta_lo/hi), paired t-test p, the 1 - 2 alpha interval
    that TOST at `alpha` reads (tost_lo/hi), the spread sd_d of the differences, n_pairs, and `identical` (every
    difference exactly 0). Differences without spread are a point: p 1 when they are all 0, 0 for a constant shift."""
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
    ci95, ci_tost = test.confidence_interval(0.95), test.confidence_interval(1 - 2 * alpha)
    return {**out, "delta_lo": float(ci95.low), "delta_hi": float(ci95.high), "tost_lo": float(ci_tost.low),
            "tost_hi": float(ci_tost.high), "p_value": float(test.pvalue)}  # fmt: skip


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


RANK_MDE_DRAWS = 4000  # simulated grids per power estimate of the signed-rank test (seeded: the same every call)


@cache
def rank_mde_factor(n: int, alpha: float = ALPHA, power: float = POWER) -> float:
    """The signed-rank test's MDE over `n` pairs in units of sd_d, by simulation (no closed form): the smallest
    shift of N(shift, 1) differences that the two-sided exact test at `alpha` rejects with probability `power`
    (bisection on common draws). inf when no outcome over n pairs can reach p < alpha (2 / 2**n >= alpha)."""
    if n < 2:
        return np.nan
    if n <= MAX_EXACT_PAIRS and 2.0 / 2**n >= alpha:
        return np.inf
    z = np.random.default_rng(0).normal(size=(RANK_MDE_DRAWS, n))
    ranks = np.arange(1, n + 1)
    if n <= MAX_EXACT_PAIRS:  # normal draws have no ties: the null of |W| is the fixed one of ranks 1..n
        null = np.sort(np.abs((1 - 2 * ((np.arange(2**n)[:, None] >> np.arange(n)) & 1)) @ ranks))

    def achieved(shift: float) -> float:
        d = z + shift
        if n > MAX_EXACT_PAIRS:
            return float((_rank_p(d, "two-sided")[0] < alpha).mean())
        w = np.abs((np.sign(d) * stats.rankdata(np.abs(d), axis=-1)).sum(-1))
        p = (len(null) - np.searchsorted(null, w - 1e-9)) / len(null)
        return float((p < alpha).mean())

    lo, hi = 0.0, 1.0
    while achieved(hi) < power:
        lo, hi = hi, hi * 2
    for _ in range(20):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if achieved(mid) < power else (lo, mid)
    return hi


def solved_power(p0: float, p1: float, n: int, alpha: float = ALPHA) -> float:
    """Exact power of McNemar's exact test over `n` pairs when the baseline solves with probability p0 and the arm
    with p1, independently within a seed: K discordant pairs ~ Binomial(n, q), the arm's share of them
    ~ Binomial(K, p1 (1 - p0) / q)."""
    q = p0 * (1 - p1) + p1 * (1 - p0)
    if q <= 0:
        return 0.0
    k = np.arange(n + 1)[:, None]
    u = np.arange(n + 1)[None, :]
    reject = (u <= k) & (mcnemar_p(np.minimum(u, k), np.maximum(k - u, 0)) < alpha)
    weight = stats.binom.pmf(k, n, q) * stats.binom.pmf(u, k, p1 * (1 - p0) / q)
    return float((weight * reject).sum())


def solved_mde(p0: float, n: int, alpha: float = ALPHA, power: float = POWER) -> float:
    """The smallest change in the share solved (either way from the baseline's `p0`, on a 0.01 grid) that McNemar's
    exact test over `n` pairs detects with probability `power`; inf when none does, NaN below 2 pairs."""
    if n < 2 or not np.isfinite(p0):
        return np.nan
    for delta in np.arange(1, 101) / 100:
        ups = [p0 + delta] if p0 + delta <= 1 else []
        if any(solved_power(p0, p1, n, alpha) >= power for p1 in [*ups, *([p0 - delta] if p0 >= delta else [])]):
            return float(delta)
    return np.inf


# --- the decision core: [... x arms x seeds] paired differences -> calls ------------------------------------------


def planned_looks(n_first: int, seed_step: int | None = None, max_seeds: int | None = None) -> list[int]:
    """The seed counts at which the sweeper looks: n_first, then + seed_step (default n_first) up to max_seeds (None
    or <= n_first: one look). Known before the first run, so alpha can be spent over them."""
    step = seed_step or n_first
    if step < 1 or n_first < 1:
        raise ValueError(f"ablation.seed_step: got {seed_step!r} with {n_first} first seeds; allowed: an integer >= 1")
    cap = max(n_first, max_seeds or n_first)
    return [*range(n_first, cap, step), cap]


def look_alpha(alpha: float, max_looks: int) -> float:
    """The level each of `max_looks` looks tests at: alpha spent evenly, so the union bound over looks is alpha."""
    return alpha / max(1, max_looks)


def _t_tests(d: np.ndarray, margin: float | None) -> dict[str, np.ndarray]:
    """Per arm over the last axis (NaN: no pair): n, mean, sd, p_d (two-sided paired t), p_e (TOST against ±margin;
    NaN without a margin > 0), identical. Differences without spread: p_d 1 at 0 and 0 otherwise, p_e 0 inside the
    margin and 1 outside, as the interval is then the point itself."""
    ok = np.isfinite(d)
    n = ok.sum(-1)
    filled = np.where(ok, d, 0.0)
    mean = np.divide(filled.sum(-1), n, out=np.full(n.shape, np.nan), where=n > 0)
    resid = np.where(ok, d - mean[..., None], 0.0)
    sd = np.sqrt(np.divide((resid**2).sum(-1), n - 1, out=np.full(n.shape, np.nan), where=n > 1))
    lo, hi = np.where(ok, d, np.inf).min(-1), np.where(ok, d, -np.inf).max(-1)
    flat = (n > 1) & (hi == lo)
    spread = (n > 1) & ~flat
    se = np.where(spread, sd, 1.0) / np.sqrt(np.maximum(n, 1))
    df = np.maximum(n - 1, 1)
    p_d = np.where(spread, 2 * stats.t.sf(np.abs(mean) / se, df), np.where(mean == 0, 1.0, 0.0))
    p_d = np.where(n > 1, p_d, np.nan)
    p_e = np.full(n.shape, np.nan)
    if margin is not None and margin > 0:
        one_sided = np.maximum(stats.t.sf((mean + margin) / se, df), stats.t.sf((margin - mean) / se, df))
        p_e = np.where(spread, one_sided, np.where(np.abs(mean) < margin, 0.0, 1.0))
        p_e = np.where(n > 1, p_e, np.nan)
    identical = (n > 0) & (lo == 0) & (hi == 0)
    return {"n": n, "mean": mean, "sd": sd, "p_d": p_d, "p_e": p_e, "identical": identical, "direction": mean}


def _rank_p(d: np.ndarray, alternative: str) -> tuple[np.ndarray, np.ndarray]:
    """The paired signed-rank test's p over the last axis (NaN: no pair) and its statistic W = Σ sign(d) rank|d|.
    Zeros are ranked with the rest and score 0 (Pratt), ties share their mean rank. The null distribution is the
    exact one of W under every sign flip of the observed scores (valid when arm and baseline are exchangeable within
    a seed, ties and censored values included), its normal approximation above MAX_EXACT_PAIRS seeds."""
    ok = np.isfinite(d)
    ranks = stats.rankdata(np.where(ok, np.abs(d), np.nan), axis=-1, nan_policy="omit")
    score = np.where(ok & (d != 0), ranks, 0.0)
    w = (np.sign(np.where(ok, d, 0.0)) * score).sum(-1)
    k = d.shape[-1]
    if k <= MAX_EXACT_PAIRS:
        signs = 1 - 2 * ((np.arange(2**k)[:, None] >> np.arange(k)) & 1)
        null = score @ signs.T
        tol = 1e-9 * np.maximum(1.0, score.sum(-1))[..., None]
        at = w[..., None]
        hits = {"two-sided": np.abs(null) >= np.abs(at) - tol, "greater": null >= at - tol, "less": null <= at + tol}
        return hits[alternative].mean(-1), w
    sd = np.sqrt((score**2).sum(-1))
    z = np.divide(w, sd, out=np.zeros_like(w), where=sd > 0)
    p = {"two-sided": 2 * stats.norm.sf(np.abs(z)), "greater": stats.norm.sf(z), "less": stats.norm.cdf(z)}
    return np.minimum(1.0, p[alternative]), w


def _rank_tests(d: np.ndarray, margin: float | None, censored: np.ndarray | None) -> dict[str, np.ndarray]:
    """The t path's summaries with the signed-rank test's p's: p_d two-sided; p_e the larger one-sided p of the
    shifted differences d + margin (> 0) and d - margin (< 0), only for arms none of whose pairs is censored (a
    censored difference understates the true one, so equivalence is never read from it); identical likewise."""
    out = _t_tests(d, None)
    p_d, w = _rank_p(d, "two-sided")
    any_censored = np.zeros(out["n"].shape, bool) if censored is None else (censored & np.isfinite(d)).any(-1)
    out.update(p_d=np.where(out["n"] > 1, p_d, np.nan), direction=w, identical=out["identical"] & ~any_censored)
    if margin is not None and margin > 0:
        p_e = np.maximum(_rank_p(d + margin, "greater")[0], _rank_p(d - margin, "less")[0])
        out["p_e"] = np.where((out["n"] > 1) & ~any_censored, p_e, np.nan)
    return out


def mcnemar_p(up: np.ndarray, down: np.ndarray) -> np.ndarray:
    """McNemar's exact test: the two-sided binomial p of `up` (pairs only the arm solved) out of the discordant
    pairs `up` + `down`; 1 when there are none."""
    k = np.asarray(up) + np.asarray(down)
    p = np.minimum(1.0, 2 * stats.binom.cdf(np.minimum(up, down), np.maximum(k, 1), 0.5))
    return np.where(k > 0, p, 1.0)


def fisher_p(solved_a: np.ndarray, runs_a: np.ndarray, solved_b: np.ndarray, runs_b: np.ndarray) -> np.ndarray:
    """Fisher's exact two-sided p per element: solved / not solved, arm against baseline (scipy)."""
    out = np.full(np.shape(solved_a), np.nan)
    for i in np.ndindex(out.shape):
        sa, na, sb, nb = (int(np.asarray(x)[i]) for x in (solved_a, runs_a, solved_b, runs_b))
        if na and nb:
            out[i] = stats.fisher_exact([[sa, na - sa], [sb, nb - sb]]).pvalue
    return out


def _exact_tests(d: np.ndarray, pair_values: tuple[np.ndarray, np.ndarray] | None) -> dict[str, np.ndarray]:
    """Solved (1) or not (0) per run: McNemar's exact test over the pairs (d = +1: only the arm solved, -1: only the
    baseline); an arm with a run whose partner did not complete (`pair_values`: the arm's and the baseline's values)
    gets Fisher's exact test over all its completed runs instead (`fisher` true). No equivalence test (p_e NaN)."""
    out = _t_tests(d, None)
    up, down = (d > 0).sum(-1), (d < 0).sum(-1)
    out.update(p_d=np.where(out["n"] > 1, mcnemar_p(up, down), np.nan), direction=(up - down).astype(float),
               fisher=np.zeros(out["n"].shape, bool))  # fmt: skip
    if pair_values is not None:
        a, b = pair_values
        b = np.broadcast_to(b, a.shape)
        fa, fb = np.isfinite(a), np.isfinite(b)
        unpaired = (fa != fb).any(-1)
        na, nb = fa.sum(-1), fb.sum(-1)
        sa, sb = np.where(fa, a, 0).sum(-1), np.where(fb, b, 0).sum(-1)
        p = fisher_p(sa, na, sb, nb)
        share = np.divide(sa, na, out=np.full(na.shape, np.nan), where=na > 0)
        share -= np.divide(sb, nb, out=np.full(nb.shape, np.nan), where=nb > 0)
        use = unpaired & (na > 0) & (nb > 0) & (na + nb > 2)
        out.update(p_d=np.where(use, p, out["p_d"]), direction=np.where(use, share, out["direction"]),
                   mean=np.where(use, share, out["mean"]), fisher=use)  # fmt: skip
    return out


def paired_tests(
    d: np.ndarray, margin: float | None, test: str = "t", censored: np.ndarray | None = None,
    pair_values: tuple[np.ndarray, np.ndarray] | None = None,
) -> dict[str, np.ndarray]:  # fmt: skip
    """Per arm over the last axis (NaN: no pair): n, mean, sd, p_d, p_e, identical and `direction` (> 0: the arm
    above the baseline), by `test`: "t" (paired t, TOST), "rank" (signed-rank, censored pairs ranked as they fall at
    their common horizon), "exact" (McNemar, Fisher where unpaired)."""
    if test == "rank":
        return _rank_tests(d, margin, censored)
    if test == "exact":
        return _exact_tests(d, pair_values)
    return _t_tests(d, margin)


def step_down(p_d: np.ndarray, p_e: np.ndarray, family: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Adjusted p's of the joint step-down over each arm's H0 (p_d) and HE (p_e) along the last axis: the r-th
    smallest p times t_r (the arms of `family` not yet cleared, an arm being cleared once all its tested hypotheses
    came earlier), made non-decreasing, capped at 1. NaN p's are not tested (adjusted NaN) but their arm still
    counts in t while it is in `family`. With every p_e NaN this is Holm's adjustment over the family."""
    p = np.concatenate([p_d, p_e], axis=-1)
    m = p_d.shape[-1]
    arm = np.tile(np.arange(m), 2)
    tested = np.isfinite(p)
    order = np.argsort(np.where(tested, p, np.inf), axis=-1, kind="stable")
    left = (tested[..., :m].astype(int) + tested[..., m:]).astype(int)  # tested hypotheses not yet passed, per arm
    t = family.sum(-1).astype(float)
    running = np.zeros(p.shape[:-1])
    adjusted = np.full(p.shape, np.nan)
    for r in range(2 * m):
        k = order[..., r : r + 1]
        pk, on = np.take_along_axis(p, k, -1)[..., 0], np.take_along_axis(tested, k, -1)[..., 0]
        running = np.where(on, np.maximum(running, np.minimum(1.0, t * pk)), running)
        np.put_along_axis(adjusted, k, np.where(on, running, np.nan)[..., None], -1)
        a = arm[k[..., 0]]
        onehot = (np.arange(m) == a[..., None]) & on[..., None]
        left = left - onehot
        cleared = on & (np.take_along_axis(left, a[..., None], -1)[..., 0] == 0)
        t = t - (cleared & np.take_along_axis(family, a[..., None], -1)[..., 0])
    return adjusted[..., :m], adjusted[..., m:]


def decide(
    d: np.ndarray, *, alpha: float = ALPHA, margin: float | None = None, higher_better: bool = False,
    looks: Sequence[int] | None = None, counts: np.ndarray | None = None, eligible: np.ndarray | None = None,
    test: str = "t", censored: np.ndarray | None = None, pair_values: tuple[np.ndarray, np.ndarray] | None = None,
) -> dict[str, np.ndarray]:  # fmt: skip
    """The calls for paired differences `d` [... x arms x seeds] (arm - baseline; NaN: no pair; seeds in the order
    they were run), each look testing at `alpha` (the per-look level). Look k (seed count looks[k]; None: one look at
    every seed) tests the arms still undecided that ran at least that many seeds (`counts` per arm, default all) on
    their first looks[k] seeds; a call made stays. `eligible` (default all) arms may be called at all: the others
    (unbracketed) stay in the family's count. The family: arms with 2 or more pairs. `test`, `censored` and
    `pair_values` choose the test (`paired_tests`; the last two with the seeds on their last axis too). Returns per
    arm `code` (index into CALLS), `look` (1-based, the last look that tested it; 0: none) and, at that look, p_d,
    p_e and their adjusted p_holm, p_equiv."""
    d = np.asarray(d, float)
    shape, seeds = d.shape[:-1], d.shape[-1]
    looks = [seeds] if looks is None else [min(int(c), seeds) for c in looks]
    counts = np.full(shape, seeds) if counts is None else np.broadcast_to(counts, shape)
    eligible = np.ones(shape, bool) if eligible is None else np.broadcast_to(eligible, shape)
    family = np.isfinite(d).sum(-1) > 1
    if pair_values is not None:  # an unpaired arm (Fisher) is in the family with two or more runs on either side
        a, b = pair_values
        family |= np.isfinite(a).sum(-1) + np.isfinite(np.broadcast_to(b, a.shape)).sum(-1) > 2
    out = {"code": np.zeros(shape, int), "look": np.zeros(shape, int),
           **{k: np.full(shape, np.nan) for k in ("p_d", "p_e", "p_holm", "p_equiv")}}  # fmt: skip
    for k, c in enumerate(looks):
        active = (out["code"] == 0) & eligible & (counts >= c)
        if not active.any():
            continue
        cut = None if pair_values is None else (pair_values[0][..., :c], pair_values[1][..., :c])
        t = paired_tests(d[..., :c], margin, test, None if censored is None else censored[..., :c], cut)
        p_d, p_e = np.where(active, t["p_d"], np.nan), np.where(active, t["p_e"], np.nan)
        adj_d, adj_e = step_down(p_d, p_e, family)
        for key, value in (("p_d", p_d), ("p_e", p_e), ("p_holm", adj_d), ("p_equiv", adj_e)):
            out[key] = np.where(active, value, out[key])
        out["look"] = np.where(active, k + 1, out["look"])
        up = (t["direction"] > 0) == higher_better
        call = np.where(adj_d < alpha, np.where(up, 1, 2), np.where((adj_e < alpha) | t["identical"], 3, 0))
        out["code"] = np.where(active, call, out["code"])
    return out


# --- one grid: summary table ------------------------------------------------------------------------------------


def seeds_matrix(
    chosen: pd.DataFrame, baseline: str, arms: Sequence[str], metric: str
) -> tuple[np.ndarray, np.ndarray]:
    """[arms x seeds] differences arm - baseline (NaN where either did not complete), seeds sorted (the order the
    sweeper adds them), and each arm's count of seeds run whatever their status."""
    a, b = (wide := _wide(chosen, baseline, arms))[0](metric)
    return a - b, wide[1]


def _wide(chosen: pd.DataFrame, base: str, arms: Sequence[str]) -> tuple[Any, np.ndarray]:
    """A function of a column giving its ([arms x seeds] of `arms`, [1 x seeds] of the baseline) over the completed
    runs, seeds sorted; and each arm's count of seeds run whatever their status."""
    seeds = np.sort(chosen["seed"].unique())
    done = chosen[chosen["status"] == COMPLETED]

    def wide(column: str) -> tuple[np.ndarray, np.ndarray]:
        table = done.pivot_table(index=ARM, columns="seed", values=column, aggfunc="first", dropna=False)
        table = table.reindex(columns=seeds)
        return table.reindex(list(arms)).to_numpy(float), table.reindex([base]).to_numpy(float)

    counts = chosen.groupby(ARM)["seed"].nunique().reindex(list(arms)).fillna(0).to_numpy(int)
    return wide, counts


def pair_matrix(chosen: pd.DataFrame, baseline: str, arms: Sequence[str], m: measures.Measure) -> dict[str, Any]:
    """What the decision core reads for measure `m` (`chosen` holds its values as column m.text): `d` [arms x seeds]
    (steps_to: at each pair's common horizon, `measures.at_common_horizon`), `censored` pairs (steps_to), the arm's
    and the baseline's own values (`pair_values`, for Fisher's unpaired test of solved) and `counts`."""
    wide, counts = _wide(chosen, baseline, arms)
    a, b = wide(m.text)
    out = {"d": a - b, "censored": None, "pair_values": (a, b) if m.test == "exact" else None, "counts": counts}
    if m.kind == "steps_to":
        (ca, cb), (ha, hb) = wide(CENSORED), wide(HORIZON)
        out["d"], out["censored"] = measures.at_common_horizon(a, ca > 0, ha, b, cb > 0, hb)
    return out


def lrs_tried(runs: pd.DataFrame) -> dict[str, list[float]]:
    """Per arm, the sorted learning rates it ran at (any status); empty without `optim.lr`."""
    if LR not in runs:
        return {str(a): [] for a in runs[ARM].unique()}
    return {str(a): sorted(map(float, g[LR].dropna().unique())) for a, g in runs.groupby(ARM, sort=False)}


def summarize(
    runs: pd.DataFrame, baseline: str, metric: str = METRIC, *, margin: float | None = None,
    control: str | None = None, selection: str | None = None, alpha: float = ALPHA,
    looks: Sequence[int] | None = None, bracketed: Mapping[str, bool] | None = None, smooth: int = measures.SMOOTH,
    eval_average: int | None = None,
) -> pd.DataFrame:  # fmt: skip
    """One row per arm, from its runs at its best learning rate (`best_lr`, picked on `selection`, by default
    `selection_metric`), paired by seed with the baseline's at its own: n, failed, mean, std and 95% interval; Δ,
    p, `p_holm` (adjusted over the arms), `mde` and the TOST interval at `alpha`, the per-look level, and `decision`
    by `decide` (`margin`: ± in metric units, None: nothing can be equivalent; `looks`: the seed counts looked at,
    None: one look). An arm not `bracketed`, or any arm when the baseline is not, is `unbracketed`. With a `control`
    arm, `sensitive` is "yes" iff its decision is worse; when it is "no", no arm is called equivalent (only identical
    ones): a study that cannot see its factor cannot show its absence.

    `metric` is any `measures` form, measured per run by `measures.values` (`smooth`, `eval_average`; curves from
    each run's `run_dir`). steps_to is tested by the signed-rank test (censored runs ranked last at each pair's
    common horizon), solved by McNemar's (Fisher's for an arm with unpaired runs), the rest by the paired t; `test`
    names it. `seed_sd` is the arm's spread over seeds (std), `eval_se` the RMS of its runs' `val_loss_se` (the
    evaluation's own noise; val_loss only), `censored` its censored runs."""
    m = measures.parse(metric)
    arms = [str(a) for a in runs[ARM].unique()]
    if margin is not None and not (np.isfinite(margin) and margin >= 0):
        raise ValueError(f"ablation.margin: got {margin!r}; allowed: a number >= 0 in {metric}'s units, or null")
    if control is not None and (control not in arms or control == baseline):
        others = ", ".join(a for a in arms if a != baseline)
        raise ValueError(f"ablation.control: got {control!r}; allowed: an arm other than the baseline: {others}")
    measured = measures.values(runs, metric, smooth=smooth, eval_average=eval_average)
    if (runs["status"] == COMPLETED).any() and measured["value"].isna().all():
        raise ValueError(f"ablation.metric: got {metric!r}, which no run recorded; allowed: a metric its "
                         "results.json or metrics.csv hold (val_bpb needs byte-level data)")  # fmt: skip
    runs = runs.assign(**{metric: measured["value"], CENSORED: measured["censored"].astype(float),
                          HORIZON: measured["horizon"]})  # fmt: skip
    lrs = best_lrs(runs, selection or selection_metric(runs, metric))
    tried = lrs_tried(runs)
    chosen = at_lrs(runs, lrs)
    done = chosen[chosen["status"] == COMPLETED]
    base = done[done[ARM] == baseline]
    se = done[EVAL_SE] if EVAL_SE in done and m.kind == "final" and m.source == METRIC else None
    rows = []
    for arm, g in chosen.groupby(ARM, sort=False):
        ok = done[done[ARM] == arm]
        values = ok[metric].to_numpy(float)
        lo, hi = mean_interval(values)
        arm_se = None if se is None else pd.to_numeric(se[ok.index], errors="coerce").dropna().to_numpy(float)
        rows.append({"arm": arm, "baseline": arm == baseline, "n": len(values),
                     "failed": int((g["status"] != COMPLETED).sum()), "best_lr": lrs[arm],
                     "mean": values.mean() if len(values) else np.nan,
                     "std": values.std(ddof=1) if len(values) > 1 else np.nan, "ci_lo": lo, "ci_hi": hi,
                     **paired(ok, base, metric, alpha),
                     "lrs_tried": ";".join(f"{r:g}" for r in tried[str(arm)]),
                     "bracketed": True if bracketed is None else bool(bracketed.get(str(arm), False)),
                     "n_seeds": int(g["seed"].nunique()),
                     "kv_bytes": ok["kv_cache_bytes"].mean() if len(ok) else np.nan,
                     "params": ok["params.total"].mean() if len(ok) else np.nan,
                     "eval_se": float(np.sqrt(np.mean(arm_se**2))) if arm_se is not None and len(arm_se) else np.nan,
                     "censored": int(ok[CENSORED].sum())})  # fmt: skip
    summary = pd.DataFrame(rows)
    summary["seed_sd"] = summary["std"]
    compared = ~summary["baseline"]
    summary.loc[~compared, "p_value"] = np.nan  # the baseline against itself is no comparison
    others = summary.loc[compared, "arm"].tolist()
    pairs = pair_matrix(chosen, baseline, others, m)
    base_ok = bool(summary.loc[~compared, "bracketed"].all())  # a baseline not run: nothing to bracket
    eligible = summary.loc[compared, "bracketed"].to_numpy(bool) & base_ok
    calls = decide(pairs["d"], alpha=alpha, margin=margin, higher_better=m.higher_is_better, looks=looks,
                   counts=None if looks is None else pairs["counts"], eligible=eligible, test=m.test,
                   censored=pairs["censored"], pair_values=pairs["pair_values"])  # fmt: skip
    summary["test"] = np.where(compared, TESTS[m.test], None)
    if m.test != "t":  # Δ, its spread and p over every pair as the core sees them; no t interval
        full = paired_tests(pairs["d"], margin, m.test, pairs["censored"], pairs["pair_values"])
        for column, key in (("delta", "mean"), ("sd_d", "sd"), ("p_value", "p_d"), ("n_pairs", "n"),
                            ("identical", "identical")):  # fmt: skip
            summary.loc[compared, column] = full[key]
        summary.loc[compared, ["delta_lo", "delta_hi", "tost_lo", "tost_hi"]] = np.nan
        if m.test == "exact":
            summary.loc[compared, "test"] = np.where(full["fisher"], TESTS["fisher"], TESTS["exact"])
    summary["identical"] = summary["identical"].astype(bool)
    summary["n_pairs"] = summary["n_pairs"].astype(int)
    summary["p_holm"], summary["looks"], summary["decision"] = np.nan, 1, "baseline"
    summary.loc[compared, "p_holm"] = calls["p_holm"]
    summary.loc[compared, "looks"] = np.maximum(calls["look"], 1)
    summary.loc[compared, "decision"] = np.where(eligible, CALLS[calls["code"]], "unbracketed")
    base_share = float(np.nanmean(base[metric])) if len(base) else np.nan
    summary["mde"] = [
        arm_mde(m.test, s, n, alpha, base_share) if c else np.nan
        for s, n, c in zip(summary["sd_d"], summary["n_pairs"], compared, strict=True)
    ]  # fmt: skip
    summary["sensitive"] = None
    if control is not None:
        sensitive = summary.loc[summary["arm"] == control, "decision"].item() == "worse"
        summary["sensitive"] = "yes" if sensitive else "no"
        if not sensitive:
            summary.loc[(summary["decision"] == "equivalent") & ~summary["identical"], "decision"] = "inconclusive"
    return summary[COLUMNS]


def arm_mde(test: str, sd_d: float, n: int, alpha: float = ALPHA, base_share: float = np.nan) -> float:
    """The MDE of `test` over `n` pairs: the paired t's exact one (`mde`), the signed-rank test's by simulation in
    units of `sd_d` (`rank_mde_factor`), or the change in the share solved McNemar's test detects from the
    baseline's share (`solved_mde`); inf where the test cannot reject at `alpha` over n pairs."""
    if test == "rank":
        return float(sd_d * rank_mde_factor(int(n), alpha)) if np.isfinite(sd_d) and n > 1 else np.nan
    if test == "exact":
        return solved_mde(base_share, int(n), alpha)
    return mde(sd_d, int(n), alpha)


def lr_table(runs: pd.DataFrame, metric: str = METRIC) -> pd.DataFrame:
    """Per arm and learning rate: completed seeds, failures, mean and 95% interval of `metric`, and `diverged`: a run
    failed (a NaN/inf loss fails it) or ended at or above ln(vocab), the loss of the uniform guess a model starts
    from."""
    rows = []
    for arm, g_arm in runs.groupby(ARM, sort=False):
        for lr, g in g_arm.groupby(LR):
            ok = g[g["status"] == COMPLETED]
            values = ok[metric].to_numpy(float)
            start = np.log(ok["model.vocab_size"].to_numpy(float)) if "model.vocab_size" in ok else np.inf
            above = metric.endswith("loss") and bool((values >= start).any())
            lo, hi = mean_interval(values)
            rows.append({"arm": arm, "lr": lr, "n": len(values), "failed": int((g["status"] == "failed").sum()),
                         "mean": values.mean() if len(values) else np.nan, "ci_lo": lo, "ci_hi": hi,
                         "diverged": above or bool((g["status"] == "failed").any())})  # fmt: skip
    return pd.DataFrame(rows)


def lr_stability(runs: pd.DataFrame, metric: str = METRIC, tolerance: float | None = None) -> pd.DataFrame:
    """Per arm, the stability measures of a grid tuned over rates (Wortsman et al. 2023, "Small-scale proxies for
    large-scale Transformer training instabilities"):

    - `max_stable_lr`: the largest rate it tried that did not diverge (`lr_table`'s `diverged`) and, with a
      `tolerance`, whose mean `metric` is within `tolerance` of the arm's best mean over its rates that did not
      diverge (a rate past the edge of stability trains, but badly); `top_stable`: that rate is the largest the arm
      tried, so its edge was not reached;
    - `lr_sensitivity`: the mean over a common range of rates of min(loss(lr), L_init) - the arm's best loss there,
      L_init = ln vocab (the loss at init), a diverged rate counting at L_init: how much loss a rate off the optimum
      costs. The range is every rate some arm tried; a rate an arm skipped because it diverged at a lower rate (the
      sweeper's divergence rounds stop there) counts at L_init, as in Wortsman et al.'s fixed sweep; a rate some arm
      neither tried nor passed a divergence below is left out for every arm.

    `lr_sensitivity` is NaN for a metric that is not a loss, or with fewer than two common rates."""
    table = lr_table(runs, metric)
    chance = float(np.log(runs["model.vocab_size"].astype(float).max())) if "model.vocab_size" in runs else np.nan
    sign = -1.0 if higher_is_better(metric) else 1.0
    rates = sorted(set(table["lr"])) if len(table) else []
    filled = {}
    for arm, g in table.groupby("arm", sort=False):
        losses = dict(zip(g["lr"], np.where(g["diverged"], chance, np.minimum(g["mean"], chance)), strict=True))
        first = g.loc[g["diverged"], "lr"].min() if g["diverged"].any() else np.inf
        filled[arm] = {**{r: chance for r in rates if r > first}, **losses}
    common = sorted(set.intersection(*(set(f) for f in filled.values()))) if filled else []
    rows = []
    for arm, g in table.groupby("arm", sort=False):
        ok = g[~g["diverged"]]
        stable = ok
        if tolerance is not None and len(ok):
            scores = sign * ok["mean"].to_numpy(float)
            stable = ok[scores <= np.nanmin(scores) + tolerance]
        top = float(stable["lr"].max()) if len(stable) else np.nan
        row = {"arm": arm, "max_stable_lr": top, "top_stable": bool(len(stable)) and top == g["lr"].max(),
               "lr_sensitivity": np.nan}  # fmt: skip
        if metric.endswith("loss") and len(common) >= 2 and np.isfinite(chance):
            losses = np.array([filled[arm][r] for r in common], float)
            row["lr_sensitivity"] = float(np.mean(losses - losses.min()))
        rows.append(row)
    return pd.DataFrame(rows, columns=["arm", "max_stable_lr", "top_stable", "lr_sensitivity"])


def divergence_edges(
    runs: pd.DataFrame, bounds: Sequence[float] = LR_BOUNDS, step: float = SINGLE_RATE_STEP,
    selection: str | None = None,
) -> pd.DataFrame:  # fmt: skip
    """Per arm: `top_lr`, the largest rate it tried; `diverged`, whether that rate diverged (`lr_table` on
    `selection`, by default selection_metric: a failed run or a loss at or above ln vocab); `next_lr`, the rate
    beyond it (top x `step`, 3 significant digits) while it did not diverge and that rate stays within `bounds`,
    else NaN. A stability grid (`ablation.to_divergence`) adds `next_lr` until every arm's top rate diverged or the
    bound is reached: each arm's divergence edge, which an optimum bracketed from both sides does not find."""
    selection = selection or selection_metric(runs, METRIC)
    table = lr_table(runs, selection) if LR in runs else pd.DataFrame(columns=["arm", "lr", "diverged"])
    rows = []
    for arm, g in table.groupby("arm", sort=False):
        top = g.loc[g["lr"].idxmax()]
        nxt = _round3(float(top["lr"]) * step)
        keep = not top["diverged"] and float(bounds[0]) <= nxt <= float(bounds[1])
        rows.append({"arm": arm, "top_lr": float(top["lr"]), "diverged": bool(top["diverged"]),
                     "next_lr": nxt if keep else None})  # fmt: skip
    return pd.DataFrame(rows, columns=["arm", "top_lr", "diverged", "next_lr"])


# --- bracketing ---------------------------------------------------------------------------------------------------


def log_step(lrs: Sequence[float]) -> float:
    """The grid's own step between rates: the geometric mean ratio of consecutive sorted distinct rates, i.e.
    (max / min) ** (1 / (n - 1)); 3.0 for a single rate."""
    rates = sorted({float(r) for r in lrs})
    if len(rates) < 2:
        return SINGLE_RATE_STEP
    return float((rates[-1] / rates[0]) ** (1 / (len(rates) - 1)))


def _round3(x: float) -> float:
    return float(f"{x:.3g}")


def _side(tried: list[float], b: int, diverged: Mapping[float, bool], up: bool, step: float,
          bounds: tuple[float, float]) -> tuple[str, float | None]:  # fmt: skip
    """One side of the best rate tried[b]: "interior" (a tried rate beyond that did not diverge), "diverged" (the
    nearest tried rate beyond did), "bound" (the next rate beyond leaves `bounds`) or "open", with that next rate."""
    j = b + 1 if up else b - 1
    if 0 <= j < len(tried):
        return ("diverged" if diverged.get(tried[j], False) else "interior"), None
    nxt = _round3(tried[b] * step if up else tried[b] / step)
    return ("bound" if not bounds[0] <= nxt <= bounds[1] else "open"), nxt


def brackets(
    runs: pd.DataFrame, bounds: Sequence[float] = LR_BOUNDS, step: float = SINGLE_RATE_STEP, *, bracket: bool = True,
    selection: str | None = None,
) -> pd.DataFrame:  # fmt: skip
    """Per arm: `lrs_tried` (sorted), `best_lr` (as best_lrs picks it on `selection`, by default selection_metric),
    `bracketed`, `reason` and `next_lr`. A side of the best rate is closed by a tried rate beyond it (a diverged one
    counts: it is worse than any completed one) or by the bound the next rate (best × or / `step`, 3 significant
    digits) would cross. reason: "interior" (both sides closed by rates that did not diverge), "diverged" (closed, one
    side by a diverged rate), "bound" (closed, one side by the bound), "edge" (a side open: not bracketed),
    "untuned" (one rate, or no `optim.lr`, and `bracket` off: taken as given, bracketed). `next_lr`: for an
    unbracketed arm, the rate beyond its open edge (upward first when both are open, as for a single rate); an arm
    without a completed run goes down from its lowest rate. None when bracketed."""
    lo, hi = float(bounds[0]), float(bounds[1])
    if not (0 < lo < hi and step > 1):
        raise ValueError(f"ablation.lr_bounds: got {list(bounds)!r} with step {step!r}; allowed: 0 < low < high and "
                         "a step > 1")  # fmt: skip
    selection = selection or selection_metric(runs, METRIC)
    best = best_lrs(runs, selection)
    table = lr_table(runs, selection) if LR in runs else pd.DataFrame(columns=["arm", "lr", "diverged"])
    rows = []
    for arm, tried in lrs_tried(runs).items():
        diverged = {float(r.lr): bool(r.diverged) for r in table[table["arm"] == arm].itertuples()}
        row = {"arm": arm, "lrs_tried": tried, "best_lr": best.get(arm, np.nan)}
        if not tried or (len(tried) == 1 and not bracket):
            rows.append({**row, "bracketed": True, "reason": "untuned", "next_lr": None})
            continue
        if not np.isfinite(row["best_lr"]):  # nothing completed: every rate tried failed
            nxt = _round3(tried[0] / step)
            ok = nxt < lo
            rows.append({**row, "bracketed": ok, "reason": "bound" if ok else "edge", "next_lr": None if ok else nxt})
            continue
        b = int(np.argmin(np.abs(np.asarray(tried) - row["best_lr"])))
        (upper, up_next), (lower, down_next) = (_side(tried, b, diverged, u, step, (lo, hi)) for u in (True, False))
        sides = (upper, lower)
        if "open" in sides:
            reason, nxt = "edge", up_next if upper == "open" else down_next
        else:
            reason, nxt = ("diverged" if "diverged" in sides else "bound" if "bound" in sides else "interior"), None
        rows.append({**row, "bracketed": reason != "edge", "reason": reason, "next_lr": nxt})
    return pd.DataFrame(rows, columns=["arm", "lrs_tried", "best_lr", "bracketed", "reason", "next_lr"])
