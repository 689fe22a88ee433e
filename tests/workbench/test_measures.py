"""workbench.measures: the metric forms, and each run's value read from hand-made curves whose crossing steps, areas
and final values are known by construction."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from workbench import measures


@pytest.mark.parametrize(
    ("text", "kind", "source", "op", "threshold", "higher"),
    [
        ("val_loss", "final", "val_loss", None, None, False),
        ("val_accuracy", "final", "val_accuracy", None, None, True),
        ("steps_to:train/loss<0.5", "steps_to", "train/loss", "<", 0.5, False),
        ("steps_to:val/accuracy>=0.9", "steps_to", "val/accuracy", ">=", 0.9, False),
        ("solved:val_loss<=1e-3", "solved", "val_loss", "<=", 1e-3, True),
        ("solved:val/accuracy>0.99", "solved", "val/accuracy", ">", 0.99, True),
        ("auc:val/loss", "auc", "val/loss", None, None, False),
        ("auc:val/accuracy", "auc", "val/accuracy", None, None, True),
    ],
)
def test_every_form_parses_with_its_direction(text, kind, source, op, threshold, higher):
    m = measures.parse(text, strict=True)
    assert (m.kind, m.source, m.op, m.threshold, m.higher_is_better) == (kind, source, op, threshold, higher)
    assert measures.is_metric(text)


@pytest.mark.parametrize("text", ["selection_loss", "train_loss", "steps_to:train/loss", "steps_to:train/loss=0.5",
                                  "auc:", "solved:val_loss<abc", "speed:train/loss<1", "val loss", ""])  # fmt: skip
def test_anything_else_is_refused_with_the_allowed_forms(text):
    assert not measures.is_metric(text)
    with pytest.raises(ValueError, match=r"^ablation.metric: got .*; allowed: val_loss, val_bpb, val_accuracy, "
                                         r"steps_to:<logged metric><op><threshold>"):  # fmt: skip
        measures.parse(text, strict=True)


def write_curve(root: Path, name: str, steps, losses, accuracy=None) -> str:
    run_dir = root / name
    run_dir.mkdir(parents=True)
    frame = pd.DataFrame({"step": steps, "train/loss": losses})
    if accuracy is not None:
        frame["val/accuracy"] = accuracy
    frame.to_csv(run_dir / "metrics.csv", index=False)
    return str(run_dir)


def test_steps_to_is_the_first_step_of_the_running_mean_and_a_run_that_never_crosses_is_censored(tmp_path):
    steps = np.arange(0, 100, 10)
    # running means over 3 points: 2.0 until the dip, which a single point does not carry below 1
    spiky = [2.0, 2.0, 0.1, 2.0, 2.0, 0.6, 0.6, 0.6, 0.6, 0.6]  # mean of 3 < 1 first at step 70 (0.6, 0.6, 0.6)
    runs = pd.DataFrame({"status": "completed", "run_dir": [
        write_curve(tmp_path, "spiky", steps, spiky),
        write_curve(tmp_path, "never", steps, [2.0] * 10),
        write_curve(tmp_path, "short", steps[:2], [0.1, 0.1]),  # fewer points than the window: censored
    ]})  # fmt: skip
    out = measures.values(runs, "steps_to:train/loss<1", smooth=3)
    assert out["value"].tolist() == [70.0, 90.0, 10.0] and out["censored"].tolist() == [False, True, True]
    assert out["horizon"].tolist() == [90.0, 90.0, 10.0]
    unsmoothed = measures.values(runs, "steps_to:train/loss<1", smooth=1)
    assert unsmoothed["value"].tolist() == [20.0, 90.0, 0.0]


def test_auc_is_the_trapezoid_mean_and_final_values_average_the_last_evaluations(tmp_path):
    steps = np.array([0, 10, 30, 60])  # uneven logging: a plain mean of the points would be wrong
    loss = 4.0 - 0.05 * steps  # a line: its mean over [0, 60] is its value at 30
    acc = np.array([0.1, 0.3, 0.5, 0.9])
    run = write_curve(tmp_path, "r", steps, loss, acc)
    runs = pd.DataFrame({"status": ["completed", "failed"], "run_dir": [run, run], "val_accuracy": [0.9, 0.2]})
    auc = measures.values(runs, "auc:train/loss")["value"]
    assert auc[0] == pytest.approx(4.0 - 0.05 * 30, rel=1e-12) and np.isnan(auc[1])  # a failed run: no value
    assert measures.values(runs, "val_accuracy")["value"].tolist()[0] == 0.9  # results.json's
    averaged = measures.values(runs, "val_accuracy", eval_average=2)["value"][0]
    assert averaged == pytest.approx((0.5 + 0.9) / 2, rel=1e-12)
    solved = measures.values(runs, "solved:val/accuracy>=0.9")["value"]  # no such results key: the curve's last
    assert solved[0] == 1.0 and np.isnan(solved[1])
    assert measures.values(runs, "solved:val_accuracy>0.9")["value"][0] == 0.0  # strict: 0.9 is not above 0.9


def test_a_curve_measure_needs_run_dirs():
    with pytest.raises(ValueError, match=r"reads each run's metrics\.csv"):
        measures.values(pd.DataFrame({"status": ["completed"], "val_loss": [1.0]}), "auc:val/loss")


def test_pairs_are_compared_at_their_common_horizon():
    """A run cut at step 70 (a budget arm) against one that ran to 100: a crossing at 80 is censored at 70."""
    value = np.array([50.0, 80.0, 70.0, 60.0])
    censored = np.array([False, False, True, False])
    d, cens = measures.at_common_horizon(value, censored, np.array([100.0, 100, 70, 100]), np.array([40.0] * 4),
                                         np.zeros(4, bool), np.array([100.0, 100, 100, 50]))  # fmt: skip
    # pair 4: the baseline stopped at 50 after crossing at 40; the arm's 60 is past 50: censored there
    assert d.tolist() == [10.0, 40.0, 30.0, 10.0] and cens.tolist() == [False, False, True, True]
