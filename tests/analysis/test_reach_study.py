"""analysis.reach_study: the reach notebooks' tables against runs built by hand, and the sizing arithmetic against
scipy's t-test and the closed-form 6ND."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy import stats

from analysis import reach_study as rs
from analysis.runs import load
from workbench.accounting import kv_cache_bytes
from workbench.config import ModelConfig
from workbench.decide import mde

MODEL = {"vocab_size": 64, "d_model": 32, "n_layers": 6, "n_heads": 2, "n_kv_heads": 1, "mlp_hidden": 64,
         "window": 8, "max_seq_len": 64}  # fmt: skip
EDGES = ["3-7", "8-15", "16-47", "48-63"]


def write_run(root: Path, arm: str, seed: int, lr: float, cross: int | None, far: float, pattern: str) -> None:
    """A finished reach run: train/answer_accuracy logged every 5 of 150 steps, 0.1 until `cross - 15` then 1.0, so
    its running mean over 4 points first reaches 0.9 at `cross` (None: never); `far` its final accuracy at 48-63."""
    run = root / f"{arm}_s{seed}_lr{lr:g}"
    run.mkdir(parents=True)
    model = {**MODEL, "layer_pattern": pattern}
    (run / "config.yaml").write_text(yaml.safe_dump({"seed": seed, "optim": {"lr": lr}, "model": model,
                                                     "ablation": {"arm": arm, "baseline": "global"}}))  # fmt: skip
    kv = kv_cache_bytes(ModelConfig.from_dict(model), 32768)
    results = {"status": "completed", "seed": seed, "git_sha": "a" * 40, "kv_cache_bytes": kv,
               "kv_reference_context": 32768, "retrieval": {"accuracy_by_distance": dict(zip(
                   EDGES, [1.0, 1.0, 0.5 + seed / 10, far], strict=True))}}  # fmt: skip
    (run / "results.json").write_text(json.dumps(results))
    steps = np.arange(0, 151, 5)
    acc = np.where(steps >= (np.inf if cross is None else cross - 15), 1.0, 0.1)
    pd.DataFrame({"step": steps, "train/answer_accuracy": acc}).to_csv(run / "metrics.csv", index=False)


@pytest.fixture
def reach(tmp_path: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """global learns at 40, 50, 60; local never at its best rate; both also ran at a worse rate (never)."""
    for seed, cross in enumerate((40, 50, 60)):
        write_run(tmp_path, "global", seed, 1e-2, cross, 1.0, "global")
        write_run(tmp_path, "global", seed, 3e-2, None, 0.0, "global")
        write_run(tmp_path, "local", seed, 3e-2, None, 0.25 * seed, "local")
        write_run(tmp_path, "local", seed, 1e-2, None, 0.0, "local")
    summary = pd.DataFrame({"arm": ["global", "local"], "best_lr": [1e-2, 3e-2], "baseline": [True, False],
                            "n": [3, 3], "seed_sd": [0.1, 0.2], "sd_d": [0.0, 0.3], "n_pairs": [3, 3],
                            "mde": [np.nan, 0.9], "test": [np.nan, "paired t"], "delta": [0.0, -0.4],
                            "kv_bytes": [1.0, 1.0]})  # fmt: skip
    return load(str(tmp_path)), summary


def test_the_tables_read_each_arm_at_its_best_rate(reach):
    runs, summary = reach
    best = rs.at_best_rates(runs, summary)
    assert len(best) == 6 and set(zip(best["ablation.arm"], best["optim.lr"], strict=True)) == {
        ("global", 1e-2),
        ("local", 3e-2),
    }
    steps = rs.steps_to_table(best)
    assert steps.loc["global", ["median", "min", "max", "censored"]].tolist() == [50, 40, 60, 0]
    assert steps.loc["local", ["median", "censored", "runs"]].tolist() == [150, 3, 3]  # censored at the last step
    far = rs.distance_table(best)
    assert far.columns.tolist() == EDGES
    assert far.loc["global", "48-63"] == 1.0 and far.loc["local", "48-63"] == pytest.approx(0.25)
    assert far.loc["local", "16-47"] == pytest.approx(0.6)  # mean of 0.5, 0.6, 0.7


def test_kv_against_all_global_is_the_accounting_of_the_same_model_with_every_layer_global(reach):
    runs, summary = reach
    kv = rs.kv_table(summary.assign(kv_bytes=[0.0, 0.0]), runs)
    reference = kv_cache_bytes(ModelConfig.from_dict({**MODEL, "layer_pattern": "global"}), 32768)
    assert (kv["all-global bytes"] == reference).all()
    local = runs.loc[runs["ablation.arm"] == "local", "kv_cache_bytes"].iloc[0]
    # per layer: a local layer keeps `window` slots, a global one the context: 6 x 8 / (6 x 32768) of all-global
    assert local / reference == pytest.approx(8 / 32768, rel=1e-12)


def test_noise_table_states_the_control_against_the_margin(reach):
    _, summary = reach
    noise = rs.noise_table(summary, margin=0.05, control="local")
    assert noise.loc["local", "control / margin"] == pytest.approx(8.0) and noise.loc["local", "coarse"]
    assert np.isnan(noise.loc["global", "sd_d"]) and not noise.loc["global", "coarse"]
    assert not rs.noise_table(summary, margin=0.1, control="local").loc["local", "coarse"]  # 4x: graded


def test_the_spread_recovered_from_an_interval_and_from_a_p_value_is_the_sample_s():
    d = np.array([0.01, 0.07, 0.037])
    ci = stats.ttest_1samp(d, 0.0).confidence_interval(0.95)
    p = stats.ttest_1samp(d, 0.0).pvalue
    assert rs.sd_from_interval(ci.low, ci.high, 3) == pytest.approx(d.std(ddof=1), rel=1e-9)
    assert rs.sd_from_p(d.mean(), p, 3) == pytest.approx(d.std(ddof=1), rel=1e-9)


def test_seeds_needed_is_the_first_count_whose_mde_meets_the_margin():
    n = rs.seeds_needed(0.0227, 0.02, alpha=0.05 / 3)
    assert mde(0.0227, n, 0.05 / 3) <= 0.02 < mde(0.0227, n - 1, 0.05 / 3)
    assert rs.seeds_needed(1.0, 1e-3, most=50) is None


def test_gpu_hours_are_six_n_d_over_the_achieved_rate():
    assert rs.train_hours(1e8, 2e9, 0.5, peak=1e15) == pytest.approx(6 * 1e8 * 2e9 / 5e14 / 3600, rel=1e-12)
    assert rs.study_hours({"a": 1.5, "b": 2.5}, rates=2, seeds=3) == 24.0
