"""analysis.report's statistics on hand-made grids (no training): decisions, Holm, MDE, tuned arms, controls, commits.

Every expected number comes from the construction, a hand computation or a simulation, never from the code under
test; the grids are DataFrames shaped like `analysis.runs.load`'s, or tiny run dirs that it reads.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy import stats

from analysis import report

REPO = Path(__file__).resolve().parents[2]
SEED_EFFECT = np.array([0.00, 0.13, -0.08, 0.21, 0.05])  # what a seed does to every arm alike: pairing removes it


def frame(arms: Mapping[str, Sequence[float]], metric: str = "val_loss", **grid) -> pd.DataFrame:
    """One completed run per (arm, seed i) with metric value arms[arm][i], and the grid keys as `ablation.<key>`."""
    rows = [{"ablation.arm": arm, "seed": i, "status": "completed", metric: v, "kv_cache_bytes": 1024,
             "params.total": 10, **{f"ablation.{k}": g for k, g in grid.items()}}
            for arm, values in arms.items() for i, v in enumerate(values)]  # fmt: skip
    return pd.DataFrame(rows)


def by_arm(summary: pd.DataFrame) -> pd.DataFrame:
    return summary.set_index("arm")


# --- decisions ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("margin", [None, 0.0, 0.02])
def test_an_arm_identical_to_the_baseline_is_equivalent_whatever_the_margin(margin):
    base = 2.0 + SEED_EFFECT
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # zero spread: no precision-loss or divide-by-zero warning either
        s = by_arm(report.summarize(frame({"base": base, "copy": base.copy()}), "base", margin=margin))
    assert s.loc["copy", "decision"] == "equivalent" and bool(s.loc["copy", "identical"])
    assert s.loc["copy", "delta"] == 0 and (s.loc["copy", "delta_lo"], s.loc["copy", "delta_hi"]) == (0, 0)
    assert not s.loc["copy", "p_holm"] < 0.05
    assert s.loc["base", "decision"] == "baseline" and np.isnan(s.loc["base", "p_holm"])


def test_a_hopeless_learning_rate_is_worse_and_a_higher_accuracy_is_better():
    base = 2.0 + SEED_EFFECT[:3]
    hopeless = base + 1.0 + np.array([0.01, -0.02, 0.015])  # far higher loss on every seed
    s = by_arm(report.summarize(frame({"base": base, "hopeless": hopeless}), "base"))
    assert s.loc["hopeless", "decision"] == "worse" and s.loc["hopeless", "p_holm"] < 0.05
    d = hopeless - base
    assert s.loc["hopeless", "delta"] == pytest.approx(d.mean())
    acc = frame({"base": 0.5 + SEED_EFFECT[:3] / 10, "up": 0.6 + SEED_EFFECT[:3] / 10 + [0.001, -0.002, 0.0],
                 "down": 0.4 + SEED_EFFECT[:3] / 10 + [0.002, 0.0, -0.001]}, metric="val_accuracy")  # fmt: skip
    s = by_arm(report.summarize(acc, "base", "val_accuracy"))
    assert (s.loc["up", "decision"], s.loc["down", "decision"]) == ("better", "worse")


def test_equivalence_is_tost_the_90_interval_inside_the_margin():
    base = 2.0 + SEED_EFFECT
    d = np.array([0.004, -0.003, 0.006, 0.001, -0.002])
    runs = frame({"base": base, "arm": base + d})
    half90 = stats.t.ppf(0.95, 4) * d.std(ddof=1) / np.sqrt(5)  # by hand: TOST at 0.05 = the 90% interval
    half95 = stats.t.ppf(0.975, 4) * d.std(ddof=1) / np.sqrt(5)
    bound90, bound95 = abs(d.mean()) + half90, abs(d.mean()) + half95
    between = (bound90 + bound95) / 2  # inside the margin at 90%, not at 95%
    decisions = {m: by_arm(report.summarize(runs, "base", margin=m)).loc["arm", "decision"]
                 for m in (None, 0.9 * bound90, between, 0.1)}  # fmt: skip
    assert decisions == {None: "inconclusive", 0.9 * bound90: "inconclusive", between: "equivalent", 0.1: "equivalent"}
    s = by_arm(report.summarize(runs, "base", margin=0.1))
    assert (s.loc["arm", "tost_lo"], s.loc["arm", "tost_hi"]) == pytest.approx((d.mean() - half90, d.mean() + half90))
    assert (s.loc["arm", "delta_lo"], s.loc["arm", "delta_hi"]) == pytest.approx((d.mean() - half95, d.mean() + half95))


def test_a_bad_margin_or_control_is_named_with_what_is_allowed():
    runs = frame({"base": [1.0, 1.1], "a": [1.2, 1.3]})
    with pytest.raises(ValueError, match=r"ablation\.margin: got -0\.1; allowed: a number >= 0"):
        report.summarize(runs, "base", margin=-0.1)
    with pytest.raises(ValueError, match=r"ablation\.control: got 'nope'; allowed: an arm other than the baseline: a"):
        report.summarize(runs, "base", control="nope")
    with pytest.raises(ValueError, match=r"ablation\.margin: got 'wide'; allowed: a number >= 0"):
        report.margin_and_control(frame({"base": [1.0], "a": [1.2]}, margin="wide"))
    two_studies = pd.concat([frame({"x": [1.0]}, baseline="x"), frame({"y": [1.0]}, baseline="y")])
    with pytest.raises(ValueError, match=r"ablation\.baseline: got \['x', 'y'\] across the runs; allowed: one"):
        report.baseline_arm(two_studies)


# --- Holm ----------------------------------------------------------------------------------------------------------


def test_holm_matches_hand_computed_examples():
    # sorted 0.005, 0.01, 0.03, 0.04 -> x4, x3, x2, x1 = 0.02, 0.03, 0.06, 0.04 -> running max 0.02, 0.03, 0.06, 0.06
    assert report.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    # the science review's norm_placement pair: 0.009 x2 = 0.018, 0.017 x1 -> raised to 0.018
    assert report.holm([0.017, 0.009]) == pytest.approx([0.018, 0.018])
    out = report.holm([0.2, np.nan, 0.6, 0.7])  # NaN is no test: m = 3
    assert np.isnan(out[1]) and out[[0, 2, 3]] == pytest.approx([0.6, 1.0, 1.0])  # 0.6, 2 x 0.6 -> cap 1, 0.7


def test_p_holm_of_a_grid_adjusts_over_its_arms_vs_the_baseline():
    base = 2.0 + SEED_EFFECT[:4]
    shifts = {"a": [0.05, 0.06, 0.04, 0.07], "b": [0.02, -0.01, 0.05, 0.01], "c": [0.03, -0.04, 0.02, 0.0]}
    arms = {"base": base, **{arm: base + np.array(d) for arm, d in shifts.items()}}
    s = by_arm(report.summarize(frame(arms), "base"))
    p = {arm: stats.ttest_rel(arms[arm], base).pvalue for arm in "abc"}
    assert [s.loc[a, "p_value"] for a in "abc"] == pytest.approx([p[a] for a in "abc"])
    assert p["a"] < p["b"] < p["c"]  # the construction's order, so Holm by hand is:
    expected = {"a": 3 * p["a"], "b": max(3 * p["a"], 2 * p["b"]), "c": min(1.0, max(3 * p["a"], 2 * p["b"], p["c"]))}
    assert [s.loc[a, "p_holm"] for a in "abc"] == pytest.approx([expected[a] for a in "abc"])
    assert p["a"] < 0.05 and (s.loc["a", "p_holm"] < 0.05) == (s.loc["a", "decision"] == "worse")


# --- MDE -----------------------------------------------------------------------------------------------------------


def simulated_power(effect: float, sd: float, n: int, reps: int = 40_000) -> float:
    """Fraction of simulated paired studies (n differences ~ N(effect, sd)) a paired t-test at 0.05 rejects."""
    d = np.random.default_rng(1).normal(effect, sd, size=(reps, n))
    return float((stats.ttest_1samp(d, 0.0, axis=1).pvalue < 0.05).mean())


@pytest.mark.parametrize("n", [3, 5])
def test_mde_is_detected_with_80_percent_power_in_a_simulation(n):
    base = 2.0 + SEED_EFFECT[:n]
    d = np.array([0.03, -0.05, 0.08, 0.01, -0.02])[:n]
    s = by_arm(report.summarize(frame({"base": base, "arm": base + d}), "base")).loc["arm"]
    assert s["sd_d"] == pytest.approx(d.std(ddof=1))
    # 40k replications: the simulated power's standard error is 0.002; (t_.975 + t_.8) sd/√n would give 0.76 at n=3
    assert simulated_power(s["mde"], s["sd_d"], n) == pytest.approx(0.80, abs=0.01)
    assert simulated_power(0.8 * s["mde"], s["sd_d"], n) < 0.75  # and it is the smallest such effect


def test_mde_at_three_seeds_is_the_reviews_3_27_sd():
    assert report.mde(1.0, 3) == pytest.approx(3.27, abs=0.01)  # science review §0.2, from the noncentral t
    assert np.isnan(report.mde(1.0, 1))


# --- tuned arms: best learning rate --------------------------------------------------------------------------------


def tuned_frame(selection: bool = True) -> tuple[pd.DataFrame, dict]:
    """Two arms x 2 rates x 3 seeds where selection_loss and val_loss disagree on each arm's best rate."""
    # (arm, lr) -> (selection_loss, val_loss) offsets on top of the seed effect
    cells = {("base", 1e-3): (2.00, 2.30), ("base", 1e-2): (2.10, 2.20),
             ("arm", 1e-3): (2.20, 2.05), ("arm", 1e-2): (1.90, 2.40)}  # fmt: skip
    rows = []
    for (arm, lr), (sel, val) in cells.items():
        for seed in range(3):
            jitter = 0.01 * ((seed * 7 + len(arm)) % 3)  # differs by arm: nonzero spread of the differences
            rows.append({"ablation.arm": arm, "seed": seed, "optim.lr": lr, "status": "completed",
                         "val_loss": val + SEED_EFFECT[seed] + jitter, "kv_cache_bytes": 1, "params.total": 1,
                         **({"selection_loss": sel + SEED_EFFECT[seed]} if selection else {})})  # fmt: skip
    return pd.DataFrame(rows), cells


def test_best_lr_is_picked_on_selection_loss_not_on_the_reported_loss():
    runs, _ = tuned_frame()
    s = by_arm(report.summarize(runs, "base"))
    assert (s.loc["base", "best_lr"], s.loc["arm", "best_lr"]) == (1e-3, 1e-2)  # selection_loss's minima
    at = runs.set_index(["ablation.arm", "optim.lr", "seed"])["val_loss"]
    d = [at["arm", 1e-2, k] - at["base", 1e-3, k] for k in range(3)]  # paired by seed, each at its own best rate
    assert s.loc["arm", "delta"] == pytest.approx(np.mean(d)) and s.loc["arm", "n_pairs"] == 3
    assert s.loc["arm", "mean"] == pytest.approx(np.mean([at["arm", 1e-2, k] for k in range(3)]))
    without, _ = tuned_frame(selection=False)
    s = by_arm(report.summarize(without, "base"))
    assert (s.loc["base", "best_lr"], s.loc["arm", "best_lr"]) == (1e-2, 1e-3)  # val_loss's minima
    nan_selection = runs.assign(selection_loss=np.nan)
    assert report.selection_metric(nan_selection, "val_loss") == "val_loss"


def test_a_rate_where_a_seed_failed_is_not_picked():
    runs, _ = tuned_frame()
    failed = (runs["ablation.arm"] == "arm") & (runs["optim.lr"] == 1e-2) & (runs["seed"] == 2)
    runs.loc[failed, ["status", "val_loss", "selection_loss"]] = ["failed", np.nan, np.nan]
    assert by_arm(report.summarize(runs, "base")).loc["arm", "best_lr"] == 1e-3


def test_lr_table_marks_failed_and_above_start_rates_as_diverged():
    runs, _ = tuned_frame()
    runs["model.vocab_size"] = 264  # a uniform guess scores ln 264 = 5.58 nats: where training starts
    cell = runs["ablation.arm"].eq("base") & runs["optim.lr"].eq(1e-3)
    runs.loc[cell & runs["seed"].eq(1), "val_loss"] = 5.7  # finite, but above the start
    runs.loc[cell & runs["seed"].eq(2), "val_loss"] = 5.5  # below it: not diverged
    runs.loc[(runs["ablation.arm"] == "arm") & (runs["optim.lr"] == 1e-2) & (runs["seed"] == 0), "status"] = "failed"
    table = report.lr_table(runs).set_index(["arm", "lr"])
    assert table["diverged"].to_dict() == {("base", 1e-3): True, ("base", 1e-2): False, ("arm", 1e-3): False,
                                           ("arm", 1e-2): True}  # fmt: skip
    assert table.loc[("arm", 1e-2), ["n", "failed"]].tolist() == [2, 1]


# --- run dirs, the CLI ----------------------------------------------------------------------------------------------


def write_run(root: Path, arm: str, seed: int, val_loss: float, *, sha: str | None = "a" * 40, lr: float = 3e-3,
              selection_loss: float | None = None, **grid) -> None:  # fmt: skip
    """A finished run dir as the training code leaves it: config.yaml, results.json, metrics.csv."""
    run_dir = root / f"{arm}_s{seed}_lr{lr:g}"
    run_dir.mkdir(parents=True)
    config = {"seed": seed, "optim": {"lr": lr}, "model": {"vocab_size": 264},
              "ablation": {"arm": arm, "baseline": "base", **grid}}  # fmt: skip
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    results = {"status": "completed", "seed": seed, "val_loss": val_loss, "git_sha": sha, "kv_cache_bytes": 4096,
               "params": {"total": 1000}}  # fmt: skip
    if selection_loss is not None:
        results["selection_loss"] = selection_loss
    (run_dir / "results.json").write_text(json.dumps(results))
    (run_dir / "metrics.csv").write_text(f"step,train/loss,val/loss\n0,5.5,\n10,{val_loss + 0.1},{val_loss}\n")


def write_grid(root: Path, arms: Mapping[str, Sequence[float]], **kw) -> Path:
    for arm, values in arms.items():
        for seed, v in enumerate(values):
            write_run(root, arm, seed, float(v), **kw)
    return root


@pytest.mark.slow
def test_a_control_that_does_not_separate_says_so_on_the_first_line(tmp_path, capsys):
    base = 2.0 + SEED_EFFECT
    arms = {"base": base, "local": base + np.array([0.03, -0.04, 0.02, -0.01, 0.01]),
            "near": base + np.array([0.002, -0.001, 0.001, 0.0, -0.002])}  # fmt: skip
    grid = write_grid(tmp_path / "blind", arms, control="local", margin=0.05)
    s = by_arm(report.report(grid))
    assert s["sensitive"].eq("no").all() and s.loc["local", "decision"] == "inconclusive"
    assert s.loc["near", "decision"] == "inconclusive"  # its 90% interval is inside ±0.05, but the study is blind
    text = (grid / "summary.md").read_text()
    first = text.splitlines()[0]
    assert "cannot see its factor" in first and "local" in first
    assert first.endswith("no result below is evidence of no difference.")
    assert "equivalent within" not in text and "not evidence of no difference" in text.splitlines()[2]
    capsys.readouterr()

    seeing = write_grid(tmp_path / "seeing", {**arms, "local": base + 0.3 + [0.01, -0.02, 0.0, 0.02, -0.01]},
                        control="local", margin=0.05)  # fmt: skip
    s = by_arm(report.report(seeing))
    assert s["sensitive"].eq("yes").all() and s.loc["near", "decision"] == "equivalent"
    lines = (seeing / "summary.md").read_text().splitlines()
    assert lines[0].startswith("- local vs base: worse by ") and lines[1].startswith("- near vs base: equivalent")


def test_summary_md_opens_with_each_arm_in_words_and_the_mde(tmp_path, capsys):
    base = 2.0 + SEED_EFFECT[:3]
    d = np.array([0.03, 0.025, 0.035])
    grid = write_grid(tmp_path / "g", {"base": base, "r3_1": base + d}, margin=0.01)
    report.report(grid)
    lines = (grid / "summary.md").read_text().splitlines()
    half = stats.t.ppf(0.975, 2) * d.std(ddof=1) / np.sqrt(3)
    p = stats.ttest_rel(base + d, base).pvalue  # one comparison: Holm leaves it
    assert lines[0].startswith(f"- r3_1 vs base: worse by {d.mean():.3f} nats [{d.mean() - half:.3f}, "
                               f"{d.mean() + half:.3f}], p_holm {p:.2g} (MDE ")  # fmt: skip
    assert lines[1].startswith("- MDE (the smallest |Δ| detected with 80% power") and "over 3 seeds" in lines[1]
    table = pd.read_csv(grid / "summary.csv")
    assert {"p_holm", "mde", "decision", "best_lr", "sensitive", "sd_d", "tost_lo", "tost_hi"} <= set(table.columns)
    capsys.readouterr()


def test_differences_below_a_thousandth_are_printed_as_numbers_not_zeros(tmp_path, capsys):
    """Two arms that both solve a task differ by ~1e-5 nats: the words give the numbers, not "+0.000"."""
    base = np.array([7e-6, 5e-6, 9e-6])
    d = np.array([1.2e-5, -0.4e-5, 2.1e-5])
    grid = write_grid(tmp_path / "g", {"base": base, "solved": base + d}, margin=0.1)
    report.report(grid)
    first = (grid / "summary.md").read_text().splitlines()[0]
    assert first.startswith(f"- solved vs base: equivalent within ±0.1 nats: Δ {d.mean():+.2e} nats [")
    assert "0.000" not in first
    capsys.readouterr()


def test_a_tuned_grid_without_selection_loss_notes_it_and_draws_loss_vs_lr(tmp_path, capsys):
    runs, cells = tuned_frame(selection=False)
    for r in runs.to_dict("records"):
        write_run(tmp_path / "t", r["ablation.arm"], r["seed"], r["val_loss"], lr=r["optim.lr"])
    s = by_arm(report.report(tmp_path / "t"))
    assert (s.loc["base", "best_lr"], s.loc["arm", "best_lr"]) == (1e-2, 1e-3)
    text = (tmp_path / "t" / "summary.md").read_text()
    assert "the choice was made on the reported split" in text
    assert all((tmp_path / "t" / f"lr_sensitivity.{ext}").stat().st_size > 0 for ext in ("png", "svg"))
    for r in runs.to_dict("records"):  # the same grid with a selection split: no such note
        write_run(tmp_path / "u", r["ablation.arm"], r["seed"], r["val_loss"], lr=r["optim.lr"],
                  selection_loss=cells[r["ablation.arm"], r["optim.lr"]][0])  # fmt: skip
    report.report(tmp_path / "u")
    assert "reported split" not in (tmp_path / "u" / "summary.md").read_text()
    capsys.readouterr()


def cli(*args: str | Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    return subprocess.run([sys.executable, "-m", "analysis.report", *map(str, args)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)  # fmt: skip


@pytest.mark.slow
def test_mixed_commits_are_refused_by_the_cli_unless_allowed(tmp_path):
    grid = tmp_path / "mixed"
    for arm, values in {"base": [2.0, 2.1, 2.3], "a": [2.1, 2.15, 2.2]}.items():
        for seed, v in enumerate(values):
            write_run(grid, arm, seed, v, sha=["1" * 40, "2" * 40, None][seed])  # a third run recorded no commit
    refused = cli(grid)
    assert refused.returncode == 2 and refused.stdout == ""
    assert len(refused.stderr.strip().splitlines()) == 1, refused.stderr
    line = refused.stderr.strip()
    assert line.startswith("error: git_sha:") and "--allow-mixed-commits" in line
    assert all(name in line for name in ("1" * 12, "2" * 12, "unknown")) and "3 commits" in line
    assert not (grid / "summary.csv").exists()
    allowed = cli(grid, "--allow-mixed-commits")
    assert allowed.returncode == 0, allowed.stderr[-2000:]
    assert (grid / "summary.csv").is_file() and "pooled with --allow-mixed-commits" in (grid / "summary.md").read_text()


@pytest.mark.slow
def test_one_commit_and_runs_without_one_are_each_a_single_commit(tmp_path, capsys):
    for sha, name in (("f" * 40, "one"), (None, "none")):
        grid = write_grid(tmp_path / name, {"base": [2.0, 2.1], "a": [2.2, 2.25]}, sha=sha)
        assert len(report.report(grid)) == 2
    assert report.commits(pd.DataFrame({"git_sha": [None, np.nan, "b"]})).to_dict() == {"unknown": 2, "b": 1}
    capsys.readouterr()


def test_the_grid_s_metric_is_the_one_compared(tmp_path, capsys):
    """`ablation.metric: val_accuracy`: the arm with the worse loss but the higher accuracy comes out better."""
    base = 2.0 + SEED_EFFECT[:3]
    for metric, decision in (("val_loss", "worse"), ("val_accuracy", "better")):
        grid = write_grid(tmp_path / metric, {"base": base, "wide": base + 0.3}, metric=metric, margin=0.01)
        for results in grid.glob("*/results.json"):
            r = json.loads(results.read_text())
            r["val_accuracy"] = 0.5 + (0.2 if "wide" in results.parent.name else 0.0) + 0.01 * r["seed"]
            results.write_text(json.dumps(r))
        s = by_arm(report.report(grid))
        assert s.loc["wide", "decision"] == decision, metric
        assert f"{metric} by arm" in (grid / "summary.md").read_text()
    with pytest.raises(ValueError, match=r"ablation.metric: got 'val_bpb', which no run"):
        report.report(write_grid(tmp_path / "bpb", {"base": base, "wide": base + 0.3}, metric="val_bpb"))
    capsys.readouterr()


def edge_grid(root: Path) -> Path:
    """base's best rate 3e-3 is interior; arm's best is the top of 1e-3, 3e-3, 1e-2 (on selection_loss), 0.2 worse."""
    selection = {("base", 1e-3): 2.6, ("base", 3e-3): 2.4, ("base", 1e-2): 2.7, ("arm", 1e-3): 2.9,
                 ("arm", 3e-3): 2.7, ("arm", 1e-2): 2.6}  # fmt: skip
    for (arm, lr), sel in selection.items():
        for seed in range(3):
            noise = 0.01 * ((seed * 5 + len(arm)) % 3)
            write_run(root, arm, seed, sel + 0.2 * (arm == "arm") + SEED_EFFECT[seed] + noise, lr=lr,
                      selection_loss=sel + SEED_EFFECT[seed])  # fmt: skip
    return root


def test_an_arm_whose_best_rate_is_an_open_edge_is_unbracketed_and_says_which(tmp_path, capsys):
    grid = edge_grid(tmp_path / "edge")
    s = by_arm(report.report(grid))
    assert s.loc["arm", "decision"] == "unbracketed" and s.loc["base", "decision"] == "baseline"
    assert s.loc["arm", ["lrs_tried", "bracketed", "n_seeds", "looks"]].tolist() == ["0.001;0.003;0.01", False, 3, 1]
    assert bool(s.loc["base", "bracketed"])
    first = (grid / "summary.md").read_text().splitlines()[0]
    # no sweep.json: bracketing on (several rates), the grid's own step sqrt(10): the next rate is 0.0316
    assert first.startswith("- arm vs base: unbracketed: its best rate 0.01 is the top of the rates tried (0.001, "
                            "0.003, 0.01) (next to try: 0.0316), so no call is made")  # fmt: skip
    table = pd.read_csv(grid / "summary.csv")
    assert {"lrs_tried", "bracketed", "n_seeds", "looks"} <= set(table.columns)
    # the sweeper's state: a bound at 0.02 closes the top edge (0.03 would leave it); 2 planned looks: 0.025 each
    (grid / "sweep.json").write_text(json.dumps({"looks": 1, "max_looks": 2, "alpha": 0.05, "bracket": True,
                                                 "lr_bounds": [1e-6, 0.02], "lr_step": 3.0, "rounds": []}))  # fmt: skip
    s = by_arm(report.report(grid))
    assert bool(s.loc["arm", "bracketed"]) and s.loc["arm", "decision"] == "worse"
    text = (grid / "summary.md").read_text()
    assert "looks: 1 of 2 planned, each testing at α 0.05/2 = 0.025, so 0.025 of α 0.05 is spent" in text
    assert "two-sided α 0.025" in text and "rates within [1e-06, 0.02], step ×3" in text
    capsys.readouterr()


# --- the other measures, on sweep dirs whose curves are known --------------------------------------------------------

EIGHT = np.array([0, 10, 20, 30, 10, 0, 20, 30])  # each seed's own head start, in steps, shared by the arms


def write_curve(run_dir: Path, cross: float | None, horizon: int = 200, every: int = 10, smooth: int = 4) -> None:
    """train/loss logged every `every` steps: 3.0, then 0.2 from `smooth - 1` points before `cross`, so the running
    mean over `smooth` points first falls below 0.5 exactly at `cross` (None: never)."""
    steps = np.arange(0, horizon + 1, every)
    low = steps >= (np.inf if cross is None else cross - (smooth - 1) * every)
    pd.DataFrame({"step": steps, "train/loss": np.where(low, 0.2, 3.0)}).to_csv(run_dir / "metrics.csv", index=False)


def speed_grid(root: Path, metric: str, margin: float) -> Path:
    """base learns at 50 + a seed's head start; late 40 steps after it, never not at all, same with base; every
    arm ends at base's val loss within ±0.002."""
    crosses = {"base": 50 + EIGHT, "late": 90 + EIGHT, "never": [None] * 8, "same": 50 + EIGHT}
    wobble = np.array([0.001, -0.002, 0.0, 0.002, -0.001, 0.001, 0.0, -0.001])
    for arm, steps in crosses.items():
        for seed, cross in enumerate(steps):
            loss = 2.0 + 0.01 * seed + (0.0 if arm in ("base", "same") else wobble[seed])
            write_run(root, arm, seed, loss, metric=metric, margin=margin)
            write_curve(root / f"{arm}_s{seed}_lr0.003", cross)
    return root


def test_an_arm_that_learns_later_is_worse_on_steps_to_while_final_loss_calls_it_equivalent(tmp_path, capsys):
    s = by_arm(report.report(speed_grid(tmp_path / "speed", "steps_to:train/loss<0.5", margin=5.0)))
    assert s.loc["base", "mean"] == pytest.approx(np.mean(50 + EIGHT))  # the crossing steps as constructed
    assert s.loc["late", "delta"] == 40.0 and s.loc["never", "censored"] == 8 and s.loc["late", "censored"] == 0
    assert s.loc["never", "delta"] == pytest.approx(np.mean(200 - 50 - EIGHT))  # censored at the last step, 200
    p = 2 / 2**8  # every one of 8 pairs later: the exact signed-rank test's smallest two-sided p
    assert s.loc["late", "p_value"] == pytest.approx(p) and s.loc["late", "p_holm"] == pytest.approx(3 * p)
    assert s.loc["never", "p_holm"] == pytest.approx(3 * p)  # Holm: 3p, then 2p raised to the running max 3p
    assert s[["decision"]].to_dict()["decision"] == {"base": "baseline", "late": "worse", "never": "worse",
                                                     "same": "equivalent"}  # fmt: skip
    assert set(s.loc[~s["baseline"], "test"]) == {"paired signed-rank, censored last"}
    text = (tmp_path / "speed" / "summary.md").read_text()
    assert "- late vs base: worse by 40.000 steps (paired signed-rank, censored last), p_holm 0.023" in text
    assert "censored at its last step" in text and "running mean over 4 logged points is < 0.5" in text
    assert (tmp_path / "speed" / "loss_curves.png").stat().st_size > 0
    final = by_arm(report.report(speed_grid(tmp_path / "final", "val_loss", margin=0.05)))
    assert final.loc["late", "decision"] == "equivalent" and final.loc["never", "decision"] == "equivalent"
    capsys.readouterr()


def test_solved_is_decided_by_mcnemar_paired_and_by_fisher_when_a_run_failed(tmp_path, capsys):
    for name, failed_seed in (("paired", None), ("unpaired", 7)):
        grid = tmp_path / name
        for arm in ("base", "flaky"):
            for seed in range(8):
                write_run(grid, arm, seed, 1.0, metric="solved:val_accuracy>=0.99", margin=0.1)
                results = grid / f"{arm}_s{seed}_lr0.003" / "results.json"
                r = json.loads(results.read_text())
                r["val_accuracy"] = 1.0 if arm == "base" or seed == 0 else 0.5
                if arm == "flaky" and seed == failed_seed:
                    r["status"] = "failed"
                results.write_text(json.dumps(r))
        s = by_arm(report.report(grid))
        if failed_seed is None:
            assert s.loc["flaky", "p_value"] == pytest.approx(stats.binomtest(0, 7).pvalue)  # 7 discordant pairs
            assert s.loc["flaky", "test"] == "McNemar exact" and s.loc["flaky", "mean"] == 1 / 8
        else:
            assert s.loc["flaky", "p_value"] == pytest.approx(stats.fisher_exact([[1, 6], [8, 0]]).pvalue)
            assert s.loc["flaky", "test"] == "Fisher exact (unpaired)"
        assert s.loc["flaky", "decision"] == "worse" and s.loc["base", "mean"] == 1.0
        share = 7 / 8 if failed_seed is None else 1 - 1 / 7  # the shares' difference, paired or not
        assert f"- flaky vs base: worse by {share:.3f} ({s.loc['flaky', 'test']})" in (grid / "summary.md").read_text()
    capsys.readouterr()


def test_auc_is_the_curves_mean_compared_by_the_paired_t(tmp_path, capsys):
    grid = tmp_path / "auc"
    slopes = {"base": np.array([0.010, 0.012, 0.011]), "slow": np.array([0.007, 0.008, 0.0085])}
    expected = {}
    for arm, per_seed in slopes.items():
        for seed, k in enumerate(per_seed):
            write_run(grid, arm, seed, 1.0, metric="auc:train/loss")
            steps = np.array([0, 20, 50, 100])  # a line: its mean over [0, 100] is its value at 50
            pd.DataFrame({"step": steps, "train/loss": 3.0 - k * steps}).to_csv(
                grid / f"{arm}_s{seed}_lr0.003" / "metrics.csv", index=False)  # fmt: skip
            expected[arm, seed] = 3.0 - k * 50
    s = by_arm(report.report(grid))
    a, b = (np.array([expected[arm, i] for i in range(3)]) for arm in ("slow", "base"))
    assert s.loc["slow", "mean"] == pytest.approx(a.mean(), rel=1e-12)
    assert s.loc["slow", "p_value"] == pytest.approx(stats.ttest_rel(a, b).pvalue, rel=1e-9)
    assert s.loc["slow", "decision"] == "worse" and s.loc["slow", "test"] == "paired t"
    capsys.readouterr()


def test_the_noise_floor_the_aa_arm_and_a_coarse_control_are_stated(tmp_path, capsys):
    base = 2.0 + SEED_EFFECT[:2]
    grid = write_grid(tmp_path / "g", {"base": base, "base_aa": base, "ctrl": base + 0.3 + np.array([0.01, -0.01])},
                      control="ctrl", margin=0.05, aa=True)  # fmt: skip
    for results in grid.glob("*/results.json"):
        r = json.loads(results.read_text())
        results.write_text(json.dumps({**r, "val_loss_se": 0.02}))
    s = by_arm(report.report(grid))
    assert s.loc["base", "seed_sd"] == pytest.approx(base.std(ddof=1)) and s.loc["base", "eval_se"] == 0.02
    lines = (grid / "summary.md").read_text().splitlines()
    assert "- A/A arm base_aa (the baseline's config under its own name): equivalent, as it must be" in "\n".join(lines)
    coarse = "- control ctrl: its effect 0.300 nats is 6.0× the margin ±0.05 nats: coarse"
    assert any(x.startswith(coarse) for x in lines)
    assert any(x.startswith("- **the validation set is too small to see seed effects**: eval_se 0.020") for x in lines)
    assert any(x.startswith("- **fewer than 3 seeds** (2)") for x in lines)
    capsys.readouterr()


def test_eval_average_decides_on_the_mean_of_the_last_evaluations(tmp_path, capsys):
    grid = tmp_path / "avg"
    last3 = {}
    for arm, shift in (("base", 0.0), ("arm", 0.1)):
        for seed in range(3):
            write_run(grid, arm, seed, 9.9, eval_average=3)  # results.json's final value is not what is compared
            evals = 2.0 + shift + 0.01 * seed + np.array([0.5, 0.03, -0.02, 0.04])
            pd.DataFrame({"step": [0, 10, 20, 30], "val/loss": evals}).to_csv(
                grid / f"{arm}_s{seed}_lr0.003" / "metrics.csv", index=False)  # fmt: skip
            last3[arm, seed] = evals[-3:].mean()
    s = by_arm(report.report(grid))
    assert s.loc["arm", "mean"] == pytest.approx(np.mean([last3["arm", i] for i in range(3)]), rel=1e-12)
    assert s.loc["arm", "delta"] == pytest.approx(0.1, rel=1e-9)
    assert "val_loss is each run's mean over its last 3 evaluations" in (grid / "summary.md").read_text()
    capsys.readouterr()


def test_a_committed_study_reports_as_before_with_the_new_columns(tmp_path, capsys):
    """notebooks/results/main_local_global (make run's runs of 2026-12-02) predates val_loss_se and the measures: the
    same calls (every arm unbracketed: docs/decisions.md), seed_sd its std, no eval_se, no censored runs, the paired
    t."""
    s = by_arm(report.report(REPO / "notebooks" / "results" / "main_local_global", tmp_path))
    assert set(s["decision"]) == {"baseline", "unbracketed"}
    assert np.allclose(s["seed_sd"], s["std"], equal_nan=True) and s["eval_se"].isna().all()
    assert (s["censored"] == 0).all() and set(s.loc[~s["baseline"], "test"]) == {"paired t"}
    assert "coarse (above 5×)" in (tmp_path / "summary.md").read_text()  # local's 2.38 nats against ±0.1
    capsys.readouterr()


def test_a_learning_speed_measure_picks_each_arm_s_rate_on_itself_not_on_the_final_loss(tmp_path, capsys):
    """Three rates per arm: the middle one learns 40-60 steps sooner than its neighbours but ends 0.01 nats higher on
    the selection split (all at the floor). steps_to must pick the middle one (so both arms are bracketed) and say
    why."""
    root = tmp_path / "grid"
    for arm, late in (("base", 0), ("slow", 30)):
        for lr, (extra, sel) in {1e-3: (60, 0.50), 3e-3: (0, 0.51), 1e-2: (40, 0.50)}.items():
            for seed, head in enumerate(EIGHT):
                write_run(root, arm, seed, 0.5 + 0.001 * seed, lr=lr, selection_loss=sel + 0.001 * seed,
                          metric="steps_to:train/loss<0.5", margin=5.0)  # fmt: skip
                write_curve(root / f"{arm}_s{seed}_lr{lr:g}", 50 + head + late + extra)
    s = by_arm(report.report(root))
    assert (s.loc["base", "best_lr"], s.loc["slow", "best_lr"]) == (3e-3, 3e-3)  # selection_loss would say 1e-3
    assert s.loc["slow", "delta"] == 30.0 and s.loc["slow", "decision"] == "worse"
    assert "(a learning-speed measure picks the rate on itself" in (root / "summary.md").read_text()
    capsys.readouterr()


def test_each_arm_s_sentence_states_its_kv_cache_against_the_baseline_s(tmp_path, capsys):
    root = write_grid(tmp_path / "kv", {"base": 2.0 + SEED_EFFECT[:3], "local": 2.5 + SEED_EFFECT[:3]})
    for run in root.glob("local_*"):
        results = json.loads((run / "results.json").read_text())
        (run / "results.json").write_text(json.dumps({**results, "kv_cache_bytes": 1024}))
    report.report(root)
    line = next(x for x in (root / "summary.md").read_text().splitlines() if x.startswith("- local vs base"))
    assert line.endswith("; KV cache 0.25x base's (0.000977 MiB vs 0.00391 MiB)")  # 1024 / 4096 bytes
    capsys.readouterr()
