"""analysis.grid_notebook on a real quick grid: 2 arms x 2 seeds of norm_placement (about 20 s on 2 cores)."""

from __future__ import annotations

import json
import shlex
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure
from scipy import stats

from analysis import grid_notebook as gn
from tests.workbench.train_helpers import compose_cfg

ARMS = ["pre", "sandwich"]


@pytest.fixture(scope="module")
def quick(tmp_path_factory) -> gn.GridResult:
    return gn.run_or_load_grid(
        "norm_placement", quick=True, multirun_dir=tmp_path_factory.mktemp("np"), arms=ARMS, extra=["optim.lr=3e-3"]
    )  # one of the grid's rates: one run per arm and seed


def _results(sweep: Path) -> dict[tuple[str, int], dict]:
    out = {}
    for path in sweep.glob("*/results.json"):
        r = json.loads(path.read_text())
        out[(path.parent.name.split("_s")[0], r["seed"])] = r
    return out


@pytest.mark.slow
def test_quick_mode_trains_the_arms_and_summarises_them_against_results_json(quick):
    results = _results(quick.source)
    assert sorted(results) == [("pre", 0), ("pre", 1), ("sandwich", 0), ("sandwich", 1)]
    assert (quick.runs["status"] == "completed").all() and quick.baseline == "sandwich"
    s = quick.summary.set_index("arm")
    for arm in ARMS:
        losses = np.array([results[(arm, seed)]["val_loss"] for seed in (0, 1)])
        assert s.loc[arm, "mean"] == pytest.approx(losses.mean())
        assert s.loc[arm, "ppl_mean"] == pytest.approx(np.exp(losses).mean())
        assert s.loc[arm, "ci_lo"] < losses.mean() < s.loc[arm, "ci_hi"]
    paired = [results[("pre", seed)]["val_loss"] - results[("sandwich", seed)]["val_loss"] for seed in (0, 1)]
    assert s.loc["pre", "delta"] == pytest.approx(np.mean(paired))
    ppl_paired = [
        np.exp(results[("pre", k)]["val_loss"]) - np.exp(results[("sandwich", k)]["val_loss"]) for k in (0, 1)
    ]
    assert s.loc["pre", "ppl_delta"] == pytest.approx(np.mean(ppl_paired))
    assert s.loc["sandwich", "delta"] == 0 and s.loc["pre", "n_pairs"] == 2


@pytest.mark.slow
def test_full_mode_reads_the_same_store_to_the_same_summary(quick):
    full = gn.run_or_load_grid("norm_placement", quick=False, multirun_dir=quick.source)
    assert full.summary.equals(quick.summary)


@pytest.mark.slow
def test_table_curves_and_pareto_figure(quick):
    table = gn.display_table(quick.summary)
    assert list(table.index) == ["pre", "sandwich (baseline)"]
    assert table.loc["sandwich (baseline)", "Δ loss"] == "" and table.loc["pre", "Δ loss"].startswith(("+", "-"))
    assert "±" in table.loc["pre", "val ppl"]
    curves = gn.mean_curves(quick.runs, ["train/loss", "no/such/metric"])
    assert set(curves["arm"]) == set(ARMS) and curves["train/loss"].notna().any()
    assert curves["no/such/metric"].isna().all()
    assert isinstance(quick.pareto, Figure) and len(quick.pareto.axes[0].lines) >= 1


@pytest.mark.slow
def test_two_runs_of_one_arm_and_seed_are_rejected(quick, tmp_path):
    sweep = tmp_path / "mixed"
    shutil.copytree(quick.source, sweep)
    pre0 = next(sweep.glob("pre_s0_*"))
    shutil.copytree(pre0, sweep / "pre_s0_otherconfig")
    with pytest.raises(ValueError, match=r"\('pre', 0\)"):
        gn.load_grid(sweep)


def test_bad_names_and_a_missing_store_fail_before_any_training(tmp_path):
    with pytest.raises(ValueError, match=r"grid: got 'nope'; allowed: .*local_global_ratio"):
        gn.run_or_load_grid("nope", quick=True, multirun_dir=tmp_path / "a")
    with pytest.raises(ValueError, match=r"arms: got \['mid'\].*allowed: pre, post, sandwich"):
        gn.run_or_load_grid("norm_placement", quick=True, multirun_dir=tmp_path / "b", arms=["pre", "mid"])
    assert not (tmp_path / "b").exists()
    with pytest.raises(FileNotFoundError, match=r"python -m workbench\.train --multirun"):
        gn.run_or_load_grid("norm_placement", quick=False, multirun_dir=tmp_path / "missing")


@pytest.mark.parametrize("grid", ["local_global_ratio", "softcap_vs_qknorm", "scaling_ladder"])
def test_full_command_composes_to_the_full_study(grid):
    args = shlex.split(gn.full_command(grid, extra=["trainer.max_steps=300"]))
    assert args[:4] == ["OMP_NUM_THREADS=1", "python", "-m", "workbench.train"]
    cfg = compose_cfg([a for a in args[4:] if a != "--multirun"], None)
    assert cfg.ablation.name == grid and not cfg.ablation.quick
    assert (cfg.model.d_model, cfg.model.n_layers, cfg.data.seq_len, cfg.trainer.max_steps) == (128, 8, 128, 300)


def test_the_study_command_composes_to_experiment_study_cpu():
    args = shlex.split(gn.full_command("norm_placement", base=gn.STUDY_OVERRIDES))
    assert "hydra/launcher=joblib" in args and "model=tiny" not in args
    cfg = compose_cfg([a for a in args[4:] if a not in ("--multirun", "hydra/launcher=joblib")], None)
    assert (cfg.model.n_layers, cfg.data.seq_len, cfg.trainer.max_steps) == (4, 128, 120)
    assert list(cfg.ablation.lrs) == [1e-3, 3e-3, 1e-2] and cfg.ablation.control == "pre_half"


@pytest.mark.slow
def test_archive_runs_keeps_results_configs_and_curves_not_checkpoints(quick, tmp_path):
    dest = tmp_path / "archive"
    (quick.source / "unfinished_s9_0123456789").mkdir()  # a run still training: no results.json yet
    assert gn.archive_runs(quick.source, dest) == len(quick.runs)
    kept = {p.relative_to(dest).parts[-1] for p in dest.rglob("*") if p.is_file() and p.parent != dest}
    assert kept == set(gn.KEPT) and not (dest / "unfinished_s9_0123456789").exists()
    # the sweeper's rounds (looks, alpha) travel with the runs: the report decides at the alpha they record
    assert (dest / "sweep.json").read_text() == (quick.source / "sweep.json").read_text()
    again = gn.load_grid(dest)
    assert sorted(again["run_id"] if "run_id" in again else again["run_dir"].map(lambda d: Path(d).name)) == sorted(
        quick.runs["run_dir"].map(lambda d: Path(d).name)
    )
    pd.testing.assert_frame_equal(gn.summarize_grid(again, quick.baseline), quick.summary)


def test_summary_and_table_of_a_hand_made_store_match_scipy():
    loss = {("a", 0): 2.0, ("a", 1): 2.2, ("a", 2): 2.1, ("b", 0): 2.1, ("b", 1): 2.4, ("b", 2): 2.2, ("c", 5): 3.0}
    rows = [{"ablation.arm": arm, "seed": seed, "status": "completed", "val_loss": v, "kv_cache_bytes": 1024,
             "params.total": 10} for (arm, seed), v in loss.items()]  # fmt: skip
    rows.append({"ablation.arm": "a", "seed": 3, "status": "failed", "val_loss": None, "kv_cache_bytes": 1024,
                 "params.total": 10})  # fmt: skip
    s = gn.summarize_grid(pd.DataFrame(rows), "b").set_index("arm")
    ppl_a, ppl_b = (np.exp([loss[(arm, k)] for k in range(3)]) for arm in "ab")
    half = stats.t.ppf(0.975, 2) * ppl_a.std(ddof=1) / np.sqrt(3)
    assert s.loc["a", "ppl_mean"] == pytest.approx(ppl_a.mean())
    assert (s.loc["a", "ppl_ci_lo"], s.loc["a", "ppl_ci_hi"]) == pytest.approx(
        (ppl_a.mean() - half, ppl_a.mean() + half)
    )
    assert s.loc["a", "ppl_delta"] == pytest.approx((ppl_a - ppl_b).mean())
    assert s.loc["a", "ppl_p_value"] == pytest.approx(stats.ttest_rel(ppl_a, ppl_b).pvalue)
    table = gn.display_table(s.reset_index())
    assert table.loc["a", "seeds"] == "3 (1 failed)"
    assert table.loc["a", "val ppl"] == f"{ppl_a.mean():.3f} ± {half:.3f}"
    # one seed, none shared with the baseline: a mean without an interval, and no Δ
    assert (
        table.loc["c", "val loss"] == "3.0000" and table.loc["c", "Δ loss"] == "" and table.loc["c", "p (Δ loss)"] == ""
    )


def test_summarize_grid_decides_at_each_arms_best_lr_with_the_grids_margin_and_control():
    """The notebooks' summary uses analysis.report's decisions: best rate on selection_loss, ablation.margin and
    ablation.control read from the runs, perplexity compared at the rates the loss picked."""
    seed_effect = [0.0, 0.1, -0.05]
    cells = {("base", 1e-3): (2.0, 2.0), ("base", 1e-2): (2.5, 1.9), ("copy", 1e-3): (2.0, 2.0),
             ("copy", 1e-2): (2.6, 1.8), ("slow", 1e-3): (2.7, 2.9), ("slow", 1e-2): (2.3, 2.5)}  # fmt: skip
    rows = [{"ablation.arm": arm, "seed": k, "optim.lr": lr, "status": "completed", "selection_loss": sel + e,
             "val_loss": val + e + (0.01 * k if arm == "slow" else 0), "kv_cache_bytes": 1024, "params.total": 10,
             "ablation.margin": 0.01, "ablation.control": "slow"}
            for (arm, lr), (sel, val) in cells.items() for k, e in enumerate(seed_effect)]  # fmt: skip
    s = gn.summarize_grid(pd.DataFrame(rows), "base").set_index("arm")
    assert s["best_lr"].to_dict() == {"base": 1e-3, "copy": 1e-3, "slow": 1e-2}  # selection_loss's minima
    assert s["decision"].to_dict() == {"base": "baseline", "copy": "equivalent", "slow": "worse"}
    assert s["sensitive"].eq("yes").all()
    slow = np.exp([2.5 + e + 0.01 * k for k, e in enumerate(seed_effect)])
    assert s.loc["slow", "ppl_delta"] == pytest.approx((slow - np.exp(np.add(2.0, seed_effect))).mean())
    table = gn.display_table(s.reset_index())
    assert table.loc["slow", "decision"] == "worse" and table.loc["base (baseline)", "decision"] == ""
    assert table.loc["slow", "p_holm"] == f"{s.loc['slow', 'p_holm']:.3g}" and float(table.loc["slow", "p_holm"]) < 0.05


def test_grid_arms_are_the_arms_and_the_product_of_the_factors():
    """A grid declared by `ablation.factors` (no `ablation.arms`) has one arm per combination, `<level>_<level>`."""
    ladder = gn.grid_arms("scaling_ladder")
    assert len(ladder) == 27 and ladder[:3] == ["d8l2_c1", "d8l2_c2", "d8l2_c3"] and ladder[-1] == "d80l4_c3"
    assert gn.grid_arms("teacher_gap") == ["t_small", "t_large", "t_small_70"]  # arms only: one sweep per mode, horizon
    assert gn.grid_arms("norm_placement") == ["pre", "post", "sandwich", "sandwich_scaled", "pre_half"]
    with pytest.raises(ValueError, match=r"arms: got \['d8l2_c9'\] for grid 'scaling_ladder'; allowed: d8l2_c1, "):
        gn.full_command("scaling_ladder", ["d8l2_c9"])
