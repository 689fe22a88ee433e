"""The step-0 attention temperature: what the stability monitor logs at step 0, how the query scale moves it, and the
softcap_vs_qknorm grid's `none_hot` arm starting at QK-norm's peak."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from analysis import attention_temperature as at
from tests.workbench.train_helpers import FAST, compose_cfg, run_cli

GRID = ["+ablation=softcap_vs_qknorm", "experiment=study_cpu"]
FP32_EPS = float(np.finfo(np.float32).eps)


@pytest.mark.slow
def test_step0_peak_is_what_the_stability_monitor_logs_at_step_0(tmp_path):
    """One training step of a 2-layer model with the monitor on every step: the max over layers of its logged
    `stability/max_logit/layer*` at step 0 is `step0_peak` of the same config (the same weights, batch and float32
    scoring; a few float32 ulps apart at most)."""
    overrides = [
        *FAST,
        "model.attn_logit=none",
        "trainer.max_steps=2",
        "optim.warmup_steps=1",
        "trainer.monitor_every=1",
        "seed=3",
    ]
    done = run_cli([*overrides, "logger=csv", f"hydra.run.dir={tmp_path}"])
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = pd.read_csv(tmp_path / "metrics.csv")
    logged = metrics.loc[metrics["step"] == 0, metrics.columns.str.startswith("stability/max_logit/")].max().max()
    assert logged == pytest.approx(at.step0_peak(compose_cfg(overrides, None)), rel=8 * FP32_EPS)


def test_the_query_scalar_multiplies_a_one_layer_peak_by_sqrt_of_head_dim_over_it():
    """On one layer nothing before the logits depends on the scale, so the peak at scalar s is exactly the peak at
    the default (head_dim) times sqrt(head_dim / s); `matching_scalar` inverts that for a target peak."""
    overrides = [*FAST, "model.n_layers=1", "model.attn_logit=none", "seed=1"]
    head_dim = 64 // 4
    cold = at.step0_peak(compose_cfg(overrides, None))
    scalar = at.matching_scalar(np.array([cold]), np.array([5.0 * cold]), head_dim)
    assert scalar == pytest.approx(head_dim / 25.0, rel=1e-12)
    hot = at.step0_peak(compose_cfg([*overrides, f"model.query_pre_attn_scalar={scalar!r}"], None))
    assert hot == pytest.approx(5.0 * cold, rel=8 * FP32_EPS)


def test_matching_scalar_matches_the_means_and_refuses_peaks_that_are_not_positive():
    assert at.matching_scalar(np.array([0.2, 0.3]), np.array([4.0, 6.0]), 32) == pytest.approx(32 / 20.0**2)
    with pytest.raises(ValueError, match="peaks: got means"):
        at.matching_scalar(np.array([0.0, 0.0]), np.array([4.0]), 32)


@pytest.mark.slow
def test_the_grids_none_hot_arm_starts_at_qk_norms_peak_on_seeds_it_was_not_fitted_on():
    """The grid's scalar was fitted on seeds 0-15 (`fitted_scalar`); on seeds 16-23 none_hot's and qk_norm's mean
    step-0 peaks differ by less than 3 standard errors of that difference, which holds the noise of these means and
    of the fit's (16 seeds each), all from the arms' seed-to-seed spread; none's differs by more than 20 (the check
    can fail)."""
    seeds, fit_seeds = range(16, 24), 16
    peaks = {arm: at.step0_peaks(GRID, arm, seeds) for arm in ("none_hot", "qk_norm", "none")}
    hot, target = peaks["none_hot"], peaks["qk_norm"]
    rel_fit = math.sqrt((hot.std(ddof=1) / hot.mean()) ** 2 + (target.std(ddof=1) / target.mean()) ** 2)
    se_fit = target.mean() * rel_fit / math.sqrt(fit_seeds)  # the fitted peak's error: ratio of two 16-seed means

    def gap(arm: str) -> float:
        a = peaks[arm]
        se = math.sqrt(a.var(ddof=1) / len(a) + target.var(ddof=1) / len(target) + se_fit**2)
        return abs(a.mean() - target.mean()) / se

    assert gap("none_hot") < 3.0, peaks
    assert gap("none") > 20.0, peaks
