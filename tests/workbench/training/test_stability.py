"""Stability monitors: the loss-spike score, the metrics in a short run's metrics.csv, and monitoring that leaves
training unchanged (the probes themselves: test_probes.py)."""

import csv
import math

import pytest

from tests.workbench.train_helpers import FAST, compose_cfg
from workbench.training.jobs import train
from workbench.training.stability import LossSpike, StabilityMonitor


def test_loss_spike_is_the_largest_ratio_to_the_median_of_the_losses_before():
    spike = LossSpike(window=3)
    for loss in (2.0, 2.2, 1.8, 6.0, 2.0):  # 6.0 / median(2.0, 2.2, 1.8)
        spike.update(loss)
    assert spike.pop_max() == pytest.approx(3.0) and math.isnan(spike.pop_max())
    with pytest.raises(ValueError, match=r"trainer\.monitor_every: got -1"):
        StabilityMonitor(-1)


def test_monitors_are_logged_to_metrics_csv_and_do_not_change_training(tmp_path):
    common = ["model=tiny", *FAST, "model.window=16", "trainer.max_steps=5", "trainer.val_check_interval=5",
              "trainer.log_every_n_steps=4", "logger=csv"]  # fmt: skip
    results = {}
    for every in (0, 2):
        cfg = compose_cfg([*common, f"trainer.monitor_every={every}"], tmp_path / "cache")
        results[every] = train(cfg, tmp_path / f"every{every}")
    assert results[0]["val_loss"] == results[2]["val_loss"] and results[0]["train_loss"] == results[2]["train_loss"]
    rows = list(csv.DictReader((tmp_path / "every2" / "metrics.csv").open()))
    names = [f"stability/{kind}/layer{i}" for kind in ("max_logit", "saturation") for i in (0, 1)]
    logged = {int(r["step"]): r for r in rows if r.get("stability/max_logit/layer0")}
    assert sorted(logged) == [0, 2, 4]  # every 2nd step, not thinned out by log_every_n_steps=4
    for step, row in logged.items():
        assert all(float(row[n]) > 0 for n in names if "max_logit" in n)
        assert all(0 <= float(row[n]) <= 1 for n in names if "saturation" in n)
        assert float(row["stability/output_logit_rms"]) > 0
        assert (row["stability/loss_spike"] != "") == (step > 0)  # no loss before step 0 to compare with
    assert not any(k.startswith("stability/") for k in next(csv.reader((tmp_path / "every0" / "metrics.csv").open())))
