"""workbench.decide: the decision core under sequential looks (simulated grids), bracketing (hand-made runs), and
summarize's use of both.

The simulations draw paired seed noise (every arm and the baseline share a seed's effect, which pairing removes;
each run adds its own noise), run the sweeper's rounds (seeds added to the arms still inconclusive) and count grids
with any wrong call. A rate is within alpha when it is at most the 99% quantile of Binomial(G, alpha) / G, the most
a procedure with error exactly alpha shows on G grids 99 times in 100.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from workbench import decide as dc
from workbench import measures

ALPHA, GRIDS, ARMS, SD = 0.05, 4000, 3, 1.0
LOOKS = dc.planned_looks(3, 3, 12)  # 3 first seeds, 3 more per round, at most 12: 4 looks
MARGIN = 1.5  # about one sd of a paired difference (sqrt 2): equivalence is reachable by the later looks


def simulated(effects: list[float], seed: int) -> np.ndarray:
    """[grids x arms x seeds] paired differences arm - baseline over the most seeds a sweep can run."""
    rng = np.random.default_rng(seed)
    shared = rng.normal(0, 1, (GRIDS, 1, LOOKS[-1]))  # a seed's effect on every arm alike: cancels in the pairs
    base = shared + rng.normal(0, SD, (GRIDS, 1, LOOKS[-1]))
    arms = shared + rng.normal(0, SD, (GRIDS, ARMS, LOOKS[-1])) + np.asarray(effects)[:, None]
    return arms - base


def sweep(d: np.ndarray, alpha: float, margin: float | None) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The sweeper's rounds: every arm runs LOOKS[0] seeds; after each look the arms still inconclusive get seeds up
    to the next look's count. Each look decides from the runs made so far only (NaN: never run), as the report
    replays them; returns the last look's calls and each arm's seeds run."""
    counts = np.full(d.shape[:-1], LOOKS[0])
    for k in range(len(LOOKS)):
        ran = np.where(np.arange(d.shape[-1]) < counts[..., None], d, np.nan)
        out = dc.decide(ran, alpha=alpha, margin=margin, looks=LOOKS[: k + 1], counts=counts)
        if k + 1 < len(LOOKS):
            counts = np.where(out["code"] == 0, LOOKS[k + 1], counts)
    return out, counts


def wrong(code: np.ndarray, effects: list[float], margin: float | None) -> np.ndarray:
    """Per grid: any wrong call. On a loss, better means Δ < 0. Wrong: better/worse at Δ = 0, the opposite sign of
    a nonzero Δ, equivalent at |Δ| >= margin."""
    e = np.asarray(effects)
    bad = ((e == 0) & (code != 0) & (code != 3)) | ((e > 0) & (code == 1)) | ((e < 0) & (code == 2))
    if margin is not None:
        bad |= (np.abs(e) >= margin) & (code == 3)
    return bad.any(-1)


def within_alpha(rate: float, alpha: float = ALPHA, grids: int = GRIDS) -> bool:
    return rate <= stats.binom.ppf(0.99, grids, alpha) / grids


@pytest.mark.parametrize(("effects", "margin"), [([0.0] * ARMS, None), ([0.0] * ARMS, MARGIN),
                                                 ([MARGIN, -MARGIN, 1.5 * MARGIN], MARGIN)])  # fmt: skip
def test_sequential_looks_keep_the_wrong_call_rate_within_alpha_and_naive_retesting_does_not(effects, margin):
    d = simulated(effects, seed=len(effects) + int(10 * (margin or 0)) + int(sum(effects)))
    spent, counts = sweep(d, dc.look_alpha(ALPHA, len(LOOKS)), margin)
    rate = wrong(spent["code"], effects, margin).mean()
    assert within_alpha(rate), rate
    assert (counts > LOOKS[0]).any() and (counts < LOOKS[-1]).any()  # seeds were added, and arms stopped early
    # the calls replayed from the runs made equal one pass over every seed: one rule for the sweeper and the report
    once = dc.decide(d, alpha=dc.look_alpha(ALPHA, len(LOOKS)), margin=margin, looks=LOOKS)
    assert (once["code"] == spent["code"]).all() and (once["look"] == spent["look"]).all()
    if effects[0] == 0:  # A/A: re-testing at alpha at every look, as when seeds are added by hand, exceeds alpha
        naive, _ = sweep(d, ALPHA, margin)
        naive_rate = wrong(naive["code"], effects, margin).mean()
        assert not within_alpha(naive_rate) and naive_rate > 2 * ALPHA, naive_rate
        single = dc.decide(d[..., : LOOKS[0]], alpha=ALPHA, margin=margin)  # one look at alpha: within it
        assert within_alpha(wrong(single["code"], effects, margin).mean())


def test_each_look_spends_at_most_its_share():
    """The union bound's terms: the grids whose first wrong call is at look k are at most alpha / K each."""
    d = simulated([0.0] * ARMS, seed=7)
    out = dc.decide(d, alpha=dc.look_alpha(ALPHA, len(LOOKS)), margin=MARGIN, looks=LOOKS)
    bad = (out["code"] == 1) | (out["code"] == 2)
    first = np.where(bad, out["look"], len(LOOKS) + 1).min(-1)
    for k in range(1, len(LOOKS) + 1):
        assert within_alpha((first == k).mean(), ALPHA / len(LOOKS)), k


def test_a_real_effect_is_called_before_the_cap_and_a_copy_of_the_baseline_never_differs():
    d = simulated([3.0, 0.0, 0.0], seed=3)
    out, counts = sweep(d, dc.look_alpha(ALPHA, len(LOOKS)), MARGIN)
    assert (out["code"][:, 0] == 2).mean() > 0.95 and np.median(counts[:, 0]) < LOOKS[-1]  # worse, early
    copy = np.zeros((1, 2, 6))
    calls = dc.decide(copy, alpha=0.01)  # every difference exactly 0: equivalent without a margin
    assert (dc.CALLS[calls["code"]] == "equivalent").all()


def test_the_step_down_is_holm_without_a_margin_and_counts_decided_arms():
    p = np.array([[0.01, 0.04, 0.03, 0.005]])
    adj, _ = dc.step_down(p, np.full_like(p, np.nan), np.ones_like(p, bool))
    assert adj[0] == pytest.approx(dc.holm(p[0]))
    # an arm decided at an earlier look (no p now) still counts: the smallest p is multiplied by 4, not 3
    now = np.array([[0.01, np.nan, 0.03, 0.005]])
    adj, _ = dc.step_down(now, np.full_like(now, np.nan), np.ones_like(now, bool))
    assert adj[0, 3] == pytest.approx(4 * 0.005) and np.isnan(adj[0, 1])
    # with a margin, an arm leaves the count only once both its hypotheses are rejected
    adj_d, adj_e = dc.step_down(np.array([[0.001, 0.5]]), np.array([[0.002, 0.004]]), np.ones((1, 2), bool))
    # sorted: d0 0.001 x2, e0 0.002 x2 (arm 0 cleared after), e1 0.004 x1, d1 0.5 x1
    assert (adj_d[0], adj_e[0]) == (pytest.approx([0.002, 0.5]), pytest.approx([0.004, 0.004]))


@pytest.mark.parametrize(("n_first", "step", "cap", "looks"), [(3, 3, 12, [3, 6, 9, 12]), (3, None, None, [3]),
                                                                (3, 2, 8, [3, 5, 7, 8]), (3, 3, 3, [3]),
                                                                (2, None, 5, [2, 4, 5])])  # fmt: skip
def test_planned_looks(n_first, step, cap, looks):
    assert dc.planned_looks(n_first, step, cap) == looks


# --- bracketing ----------------------------------------------------------------------------------------------------


def runs(cells: dict[tuple[str, float], float | str], seeds: int = 2, vocab: int = 264) -> pd.DataFrame:
    """Runs per (arm, lr): a loss (selection_loss = val_loss + seed noise) or "failed" on every seed."""
    rows = []
    for (arm, lr), loss in cells.items():
        for s in range(seeds):
            failed = loss == "failed"
            value = np.nan if failed else float(loss) + 0.01 * s
            rows.append({"ablation.arm": arm, "seed": s, "optim.lr": lr, "status": "failed" if failed else "completed",
                         "selection_loss": value, "val_loss": value, "model.vocab_size": vocab})  # fmt: skip
    return pd.DataFrame(rows)


def one(table: pd.DataFrame, arm: str = "a") -> dict:
    return table.set_index("arm").loc[arm].to_dict()


def test_an_optimum_between_two_tried_rates_is_interior():
    b = one(dc.brackets(runs({("a", 1e-3): 3.0, ("a", 3e-3): 2.5, ("a", 1e-2): 2.8}), step=3.0))
    assert b == {"lrs_tried": [1e-3, 3e-3, 1e-2], "best_lr": 3e-3, "bracketed": True, "reason": "interior",
                 "next_lr": None}  # fmt: skip


@pytest.mark.parametrize(
    ("losses", "best", "next_lr"), [((3.0, 2.8, 2.5), 1e-2, 0.03), ((2.5, 2.8, 3.0), 1e-3, 3.33e-4)]
)
def test_an_optimum_at_an_open_edge_is_not_bracketed_and_names_the_next_rate(losses, best, next_lr):
    cells = dict(zip([("a", 1e-3), ("a", 3e-3), ("a", 1e-2)], losses, strict=True))
    b = one(dc.brackets(runs(cells), step=3.0))
    assert (b["best_lr"], b["bracketed"], b["reason"], b["next_lr"]) == (best, False, "edge", next_lr)


def test_a_diverged_rate_beyond_the_best_closes_that_side():
    """Failed runs, or a finite loss at or above ln(vocab) (5.58 for 264), count as tried rates worse than any."""
    for bad in ("failed", np.log(264), 6.0):
        b = one(dc.brackets(runs({("a", 1e-3): 3.0, ("a", 3e-3): 2.5, ("a", 1e-2): bad}), step=3.0))
        assert (b["best_lr"], b["bracketed"], b["reason"], b["next_lr"]) == (3e-3, True, "diverged", None), bad
    below = one(dc.brackets(runs({("a", 1e-3): 3.0, ("a", 3e-3): 2.5, ("a", 1e-2): 5.5}), step=3.0))
    assert below["reason"] == "interior"  # 5.5 < ln 264: a poor rate, not a diverged one


def test_a_bound_closes_a_side_when_the_next_rate_would_leave_it():
    b = one(dc.brackets(runs({("a", 1.0): 3.0, ("a", 5.0): 2.5}), bounds=(1e-6, 10.0), step=3.0))
    assert (b["bracketed"], b["reason"], b["next_lr"]) == (True, "bound", None)  # 15 > 10
    low = one(dc.brackets(runs({("a", 2e-6): 2.5, ("a", 1e-5): 3.0}), bounds=(1e-6, 10.0), step=3.0))
    assert (low["bracketed"], low["reason"]) == (True, "bound")  # 6.67e-7 < 1e-6
    inside = one(dc.brackets(runs({("a", 1.0): 3.0, ("a", 3.0): 2.5}), bounds=(1e-6, 10.0), step=3.0))
    assert (inside["bracketed"], inside["next_lr"]) == (False, 9.0)  # 9 is inside: try it


def test_a_single_rate_is_untuned_without_bracketing_and_goes_up_first_with_it():
    cells = {("a", 2e-3): 2.5}
    assert one(dc.brackets(runs(cells), bracket=False)) == {"lrs_tried": [2e-3], "best_lr": 2e-3, "bracketed": True,
                                                            "reason": "untuned", "next_lr": None}  # fmt: skip
    b = one(dc.brackets(runs(cells), step=dc.log_step([2e-3])))
    assert (b["bracketed"], b["reason"], b["next_lr"]) == (False, "edge", 6e-3)
    top = one(dc.brackets(runs({("a", 5.0): 2.5}), step=3.0))
    assert top["next_lr"] == 1.67  # up would leave the bounds: down, 3 significant digits


def test_bracketing_off_still_reports_an_edge_of_several_rates_and_failed_arms_go_down():
    edge = one(dc.brackets(runs({("a", 1e-3): 3.0, ("a", 1e-2): 2.5}), bracket=False, step=10.0))
    assert (edge["bracketed"], edge["reason"], edge["next_lr"]) == (False, "edge", 0.1)
    dead = one(dc.brackets(runs({("a", 1e-2): "failed", ("a", 1e-1): "failed"}), step=10.0))
    assert np.isnan(dead["best_lr"]) and (dead["bracketed"], dead["next_lr"]) == (False, 1e-3)


def test_the_best_rate_is_the_selection_splits_and_arms_are_judged_apart():
    r = runs({("a", 1e-3): 3.0, ("a", 3e-3): 2.5, ("a", 1e-2): 2.8, ("b", 1e-3): 2.0, ("b", 3e-3): 2.5,
              ("b", 1e-2): 2.8})  # fmt: skip
    r.loc[r["ablation.arm"].eq("a") & r["optim.lr"].eq(1e-2), "val_loss"] = 1.0  # the reported split disagrees
    t = dc.brackets(r, step=3.0).set_index("arm")
    assert t.loc["a", "reason"] == "interior" and (t.loc["b", "reason"], t.loc["b", "next_lr"]) == ("edge", 3.33e-4)


def test_log_step_is_the_grids_geometric_step():
    assert dc.log_step([1e-1, 1e-3, 1e-2, 1e-2]) == pytest.approx(10.0)
    assert dc.log_step([3e-3, 1e-2]) == pytest.approx(10 / 3)
    assert dc.log_step([1e-3, 2e-3, 8e-3]) == pytest.approx(np.sqrt(8))  # the geometric mean of 2 and 4
    assert dc.log_step([5e-3]) == 3.0


# --- summarize ------------------------------------------------------------------------------------------------------


def paired_runs(arms: dict[str, np.ndarray]) -> pd.DataFrame:
    rows = [{"ablation.arm": arm, "seed": s, "status": "completed", "val_loss": v, "kv_cache_bytes": 1,
             "params.total": 1} for arm, values in arms.items() for s, v in enumerate(values)]  # fmt: skip
    return pd.DataFrame(rows)


def test_an_unbracketed_arm_or_baseline_gets_no_call():
    base = 2.0 + np.array([0.0, 0.13, -0.08, 0.21])
    r = paired_runs(
        {"base": base, "bad": base + 1.0 + [0.01, -0.02, 0.0, 0.01], "same": base + np.array([0.01, 0, 0, -0.01])}
    )
    calls = dc.summarize(r, "base", margin=0.1).set_index("arm")["decision"]
    assert calls.to_dict() == {"base": "baseline", "bad": "worse", "same": "equivalent"}
    one_arm = dc.summarize(r, "base", margin=0.1, bracketed={"base": True, "bad": False, "same": True})
    assert one_arm.set_index("arm")["decision"].to_dict() == {"base": "baseline", "bad": "unbracketed",
                                                               "same": "equivalent"}  # fmt: skip
    no_base = dc.summarize(r, "base", margin=0.1, bracketed={"base": False, "bad": True, "same": True})
    assert no_base["decision"].tolist() == ["baseline", "unbracketed", "unbracketed"]
    assert no_base["bracketed"].tolist() == [False, True, True]


def test_summarize_tests_at_the_per_look_alpha_and_keeps_a_call_made_at_an_earlier_look():
    rng = np.random.default_rng(5)
    base = 2.0 + rng.normal(0, 0.1, 6)
    d = np.array([0.05, 0.02, 0.04, 0.01, 0.03, 0.0])
    r = paired_runs({"base": base, "near": base + d})
    loose, strict = (dc.summarize(r, "base", alpha=a).set_index("arm").loc["near"] for a in (0.05, 0.005))
    p = stats.ttest_1samp(d, 0.0).pvalue
    assert 0.005 < p < 0.05 and (loose["decision"], strict["decision"]) == ("worse", "inconclusive")
    half = stats.t.ppf(1 - 0.005, 5) * d.std(ddof=1) / np.sqrt(6)  # TOST at 0.005: the 99% interval
    assert (strict["tost_lo"], strict["tost_hi"]) == pytest.approx((d.mean() - half, d.mean() + half))
    assert strict["mde"] == pytest.approx(dc.mde(d.std(ddof=1), 6, 0.005)) and strict["mde"] > loose["mde"]
    # a sweep: "far" was called worse at the first look (3 seeds) and stopped; "near" went on to 6 seeds
    far = base[:3] + 1.0 + np.array([0.01, -0.01, 0.02])
    sweep_runs = paired_runs({"base": base, "near": base + d, "far": far})
    s = dc.summarize(sweep_runs, "base", alpha=0.05, looks=[3, 6]).set_index("arm")
    assert s.loc["far", ["decision", "looks", "n_seeds"]].tolist() == ["worse", 1, 3]
    assert s.loc["near", ["looks", "n_seeds"]].tolist() == [2, 6]
    assert s.loc["near", "p_holm"] == pytest.approx(2 * p)  # far, decided, still counts in the family


# --- the other measures' tests: signed-rank (steps_to, censored), McNemar / Fisher (solved) ----------------------


def test_the_signed_rank_p_is_scipys_exact_wilcoxon_without_ties():
    rng = np.random.default_rng(11)
    d = rng.normal(0.4, 1.0, (50, 9))
    for alternative in ("two-sided", "greater", "less"):
        ours, _ = dc._rank_p(d, alternative)
        ref = [stats.wilcoxon(row, method="exact", alternative=alternative).pvalue for row in d]
        assert ours == pytest.approx(ref, rel=1e-12)
    # above MAX_EXACT_PAIRS: scipy's normal approximation without continuity correction
    big = rng.normal(0.2, 1.0, (20, dc.MAX_EXACT_PAIRS + 4))
    ref = [stats.wilcoxon(row, method="asymptotic", correction=False).pvalue for row in big]
    assert dc._rank_p(big, "two-sided")[0] == pytest.approx(ref, rel=1e-9)


def censored_grids(delays: list[float], seeds: int, seed: int, horizon: float = 80.0):
    """[grids x arms x seeds] steps_to differences at a common horizon, and the censored pairs: a seed's own speed
    (shared by the arms, as in training) times each run's noise, every arm `delay` later; a crossing past the
    horizon is censored there: about a quarter of the runs, four pairs in ten."""
    rng = np.random.default_rng(seed)
    shared = rng.lognormal(np.log(60), 0.3, (GRIDS, 1, seeds))
    base = shared * rng.lognormal(0, 0.3, (GRIDS, 1, seeds))
    arms = shared * rng.lognormal(0, 0.3, (GRIDS, len(delays), seeds)) + np.asarray(delays)[:, None]
    h = np.full(arms.shape, horizon)
    return measures.at_common_horizon(arms, arms > horizon, h, base, base > horizon, h[:, :1])


def test_the_rank_test_keeps_wrong_calls_within_alpha_under_heavy_censoring_and_sees_a_delay():
    d, censored = censored_grids([0.0, 0.0, 0.0], seeds=8, seed=21)
    assert 0.2 < censored.mean() < 0.6
    out = dc.decide(d, alpha=ALPHA, margin=10.0, test="rank", censored=censored)
    assert within_alpha(((out["code"] == 1) | (out["code"] == 2)).any(-1).mean())
    # equivalence is never read from censored pairs: a grid where every pair is censored stays inconclusive
    assert (out["code"][censored.any(-1)] != 3).all()
    late, cens = censored_grids([30.0], seeds=8, seed=22)
    called = dc.decide(late, alpha=ALPHA, test="rank", censored=cens)
    assert (called["code"] == 2).mean() > 0.5 and not (called["code"] == 1).any()  # later: worse, never better


def test_the_rank_mde_has_80_percent_power_in_an_independent_simulation_and_none_below_6_seeds():
    assert np.isinf(dc.rank_mde_factor(5)) and np.isfinite(dc.rank_mde_factor(6))  # 2 / 2**5 > 0.05
    shift = dc.rank_mde_factor(8)
    d = np.random.default_rng(99).normal(shift, 1.0, (4000, 8))  # other draws than the ones it was solved on
    power = (stats.wilcoxon(d, axis=-1, method="exact").pvalue < ALPHA).mean()
    assert power == pytest.approx(dc.POWER, abs=0.035)  # 3 sd of two 4,000-draw estimates
    assert dc.mde(1.0, 8) < shift < 1.2 * dc.mde(1.0, 8)  # Wilcoxon's efficiency vs the t on normal data: 95%


def test_mcnemar_and_its_power_against_the_binomial_test_and_a_simulation():
    for up, down in [(0, 7), (2, 9), (3, 3), (5, 0)]:
        assert dc.mcnemar_p(np.array(up), np.array(down)) == pytest.approx(stats.binomtest(up, up + down).pvalue)
    assert dc.mcnemar_p(np.array(0), np.array(0)) == 1.0
    rng = np.random.default_rng(3)
    a, b = rng.random((20_000, 12)) < 0.9, rng.random((20_000, 12)) < 0.3
    simulated = (dc.mcnemar_p((a & ~b).sum(-1), (~a & b).sum(-1)) < ALPHA).mean()
    assert dc.solved_power(0.3, 0.9, 12) == pytest.approx(simulated, abs=4 * np.sqrt(0.25 / 20_000))
    assert np.isinf(dc.solved_mde(0.5, 5))  # 5 discordant pairs at best: p = 2 / 32 > 0.05


def test_solved_is_mcnemar_paired_and_fisher_when_a_run_lost_its_partner():
    a = np.array([[1.0, 0, 0, 0, 0, 0, 0, 0], [1, 1, 1, 1, 1, 1, 0, np.nan]])
    b = np.ones((1, 8))
    out = dc.paired_tests(a - b, None, "exact", pair_values=(a, b))
    assert out["p_d"][0] == pytest.approx(stats.binomtest(0, 7).pvalue) and not out["fisher"][0]
    assert out["fisher"][1] and out["p_d"][1] == pytest.approx(stats.fisher_exact([[6, 1], [8, 0]]).pvalue)
    calls = dc.decide(a - b, alpha=ALPHA, higher_better=True, test="exact", pair_values=(a, b))
    assert dc.CALLS[calls["code"]].tolist() == ["worse", "inconclusive"]


def _stability_runs(arms: dict[str, dict[float, tuple[float, float] | None]]) -> pd.DataFrame:
    """Two seeds per arm and rate, each given as its two losses (None: both runs failed), vocabulary 16."""
    rows = []
    for arm, rates in arms.items():
        for lr, losses in rates.items():
            for seed in (0, 1):
                loss, status = (np.nan, "failed") if losses is None else (losses[seed], "completed")
                rows.append({"ablation.arm": arm, "seed": seed, "optim.lr": lr, "status": status, "val_loss": loss,
                             "model.vocab_size": 16})  # fmt: skip
    return pd.DataFrame(rows)


STABILITY_ARMS = {
    "a": {1e-3: (2.0, 2.2), 1e-2: (1.5, 1.7), 1e-1: None},  # diverges (fails) at 1e-1: its rounds stopped there
    "b": {1e-3: (1.8, 1.8), 1e-2: (1.5, 1.7), 1e-1: (1.6, 1.8), 1.0: (2.9, 2.9)},  # 1.0 ends above ln 16 = 2.7726
}


def test_lr_stability_by_hand_max_stable_rate_within_a_tolerance_and_wortsmans_sensitivity():
    """Worked by hand, chance c = ln 16 = 2.772588722239781. Means: a 2.1, 1.6, failed; b 1.8, 1.6, 1.7, 2.9.
    The range is every rate tried, 1e-3..1.0; a never ran 1.0, but diverged below it, so 1.0 counts at c for a.
    a: (2.1 - 1.6 + 0 + (c - 1.6) + (c - 1.6)) / 4; b: (1.8 - 1.6 + 0 + 1.7 - 1.6 + (c - 1.6)) / 4.
    Max stable rate: without a tolerance, the largest rate that did not diverge (a 1e-2, b 1e-1); within 0.15 nats
    of the best (1.6 each): a 1e-2, b 1e-1 (1.7); within 0.05: b 1e-2."""
    c = 2.772588722239781
    runs = _stability_runs(STABILITY_ARMS)
    plain = dc.lr_stability(runs, "val_loss").set_index("arm")
    assert plain["max_stable_lr"].to_dict() == {"a": 1e-2, "b": 1e-1}
    assert not plain["top_stable"].any()  # both tried a rate above their last stable one
    assert plain.loc["a", "lr_sensitivity"] == pytest.approx((0.5 + 0 + 2 * (c - 1.6)) / 4, rel=1e-12)
    assert plain.loc["b", "lr_sensitivity"] == pytest.approx((0.2 + 0 + 0.1 + (c - 1.6)) / 4, rel=1e-12)
    within = {tol: dc.lr_stability(runs, "val_loss", tolerance=tol).set_index("arm") for tol in (0.15, 0.05)}
    assert within[0.15]["max_stable_lr"].to_dict() == {"a": 1e-2, "b": 1e-1}
    assert within[0.05]["max_stable_lr"].to_dict() == {"a": 1e-2, "b": 1e-2}


def test_lr_stability_leaves_out_a_rate_an_arm_neither_tried_nor_passed_a_divergence_below():
    """Arm c tried only 1e-2 and 1e-1 and never diverged: 1e-3 and 1.0 are unknown for it, so every arm's
    sensitivity is over 1e-2 and 1e-1 only (a: (0 + c - 1.6) / 2); c's top rate is stable: its edge is not found."""
    c = 2.772588722239781
    runs = _stability_runs({**STABILITY_ARMS, "c": {1e-2: (1.9, 1.9), 1e-1: (2.0, 2.0)}})
    table = dc.lr_stability(runs, "val_loss").set_index("arm")
    assert table.loc["a", "lr_sensitivity"] == pytest.approx((0 + c - 1.6) / 2, rel=1e-12)
    assert table.loc["c", "lr_sensitivity"] == pytest.approx((0 + 0.1) / 2, rel=1e-12)
    assert table.loc["c", "top_stable"] and table.loc["c", "max_stable_lr"] == 1e-1
    assert dc.lr_stability(runs[runs["optim.lr"] == 1e-2], "val_loss")["lr_sensitivity"].isna().all()


def test_divergence_edges_go_up_until_the_top_rate_diverges_or_the_bound():
    """a's top (1e-1) failed and b's (1.0) ended above ln vocab: both edges found; c's top did not diverge: the next
    rate is 1e-1 x 10, or none where that passes the bound."""
    runs = _stability_runs({**STABILITY_ARMS, "c": {1e-2: (1.9, 1.9), 1e-1: (2.0, 2.0)}})
    edges = dc.divergence_edges(runs, (1e-6, 10.0), 10.0, selection="val_loss").set_index("arm")
    assert edges["diverged"].to_dict() == {"a": True, "b": True, "c": False}
    assert edges["next_lr"].isna().to_dict() == {"a": True, "b": True, "c": False} and edges.loc["c", "next_lr"] == 1.0
    bounded = dc.divergence_edges(runs, (1e-6, 0.5), 10.0, selection="val_loss").set_index("arm")
    assert pd.isna(bounded.loc["c", "next_lr"])
