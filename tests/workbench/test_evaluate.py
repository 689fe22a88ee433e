"""workbench.evaluate.ratio_se: the standard error of a loss that is a ratio of sums over rows, checked against the
textbook SE of a mean (equal rows) and against a bootstrap over rows (unequal rows), both in float64."""

from __future__ import annotations

import numpy as np
import pytest

from workbench.evaluate import ratio_se


def sums(nats: np.ndarray, targets: np.ndarray) -> tuple[float, ...]:
    return (nats.sum(), targets.sum(), (nats**2).sum(), (nats * targets).sum(), (targets**2).sum(), len(nats))


def test_equal_rows_give_the_se_of_the_mean_of_row_losses():
    rng = np.random.default_rng(0)
    targets = np.full(50, 63.0)
    losses = rng.gamma(4.0, 0.5, 50)  # per-row mean losses
    expected = losses.std(ddof=1) / np.sqrt(50)
    assert ratio_se(*sums(losses * targets, targets)) == pytest.approx(expected, rel=1e-9)


def test_unequal_rows_match_a_bootstrap_of_the_ratio():
    rng = np.random.default_rng(1)
    targets = rng.integers(5, 60, 400).astype(float)  # e.g. passkey rows where only some positions are labelled
    nats = targets * rng.gamma(4.0, 0.5, 400)
    draws = rng.integers(0, 400, (20_000, 400))
    boot = nats[draws].sum(1) / targets[draws].sum(1)
    # the bootstrap SD itself carries ~0.5% Monte-Carlo error (20,000 draws) and the delta method O(1/m) bias
    assert ratio_se(*sums(nats, targets)) == pytest.approx(boot.std(ddof=1), rel=0.03)


def test_one_row_or_no_targets_has_no_se():
    assert np.isnan(ratio_se(3.0, 2.0, 9.0, 6.0, 4.0, 1)) and np.isnan(ratio_se(0.0, 0.0, 0.0, 0.0, 0.0, 5))
