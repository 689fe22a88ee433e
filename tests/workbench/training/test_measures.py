"""The measures end to end: `ablation.metric` checked by the schema, the A/A arm planned by the grid, and a real
quick grid on a steps_to measure through the sweeper's rounds and the report, with each run's crossing step and
val_loss_se recomputed independently from its metrics.csv and its final weights."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from analysis.report import report
from tests.workbench.train_helpers import FAST, cli_error, run_cli
from workbench.checkpoints import load_model_from_checkpoint
from workbench.data import build_data
from workbench.data.bundle import IGNORE
from workbench.training.errors import ConfigError
from workbench.training.grid import arm_table

GRID = """# @package _global_
defaults:
  - _base
ablation:
  name: speed
  baseline: fast
  metric: steps_to:train/loss<5.0
  smooth: 2
  aa: true
  seeds: [0, 1]
  max_seeds: 4
  arms:
    fast: {optim.lr: 3.0e-3}
    slow: {optim.lr: 3.0e-4}
"""


def test_a_metric_outside_the_forms_is_one_error_line_naming_them(tmp_path, monkeypatch, capsys):
    err = cli_error(["+ablation=main_local_global", "ablation.metric=steps_to:train/loss", "dry_run=true",
                     f"hydra.run.dir={tmp_path / 'run'}"], tmp_path, monkeypatch, capsys)  # fmt: skip
    line = err.strip()
    assert len(line.splitlines()) == 1 and "ablation.metric: got 'steps_to:train/loss'" in line
    assert "steps_to:<logged metric><op><threshold>" in line and "solved:" in line and "auc:" in line


def test_the_aa_arm_is_the_baselines_keys_under_its_own_name():
    grid = {"arms": {"a": {"model.window": 16}, "b": {"model.window": 32}}, "factors": {}, "baseline": "a", "aa": True}
    assert arm_table(grid) == {"a": {"model.window": 16}, "b": {"model.window": 32}, "a_aa": {"model.window": 16}}
    with pytest.raises(ConfigError, match=r"ablation\.aa: got true with baseline None"):
        arm_table({**grid, "baseline": None})


def crossing(metrics: pd.DataFrame, smooth: int, threshold: float) -> tuple[float, bool]:
    """The first step whose mean over the last `smooth` logged train losses is below `threshold` (a plain loop)."""
    rows = metrics.dropna(subset=["train/loss"]).sort_values("step")
    steps, losses = rows["step"].to_list(), rows["train/loss"].to_list()
    for i in range(smooth - 1, len(losses)):
        if sum(losses[i - smooth + 1 : i + 1]) / smooth < threshold:
            return float(steps[i]), False
    return float(metrics["step"].max()), True


def val_loss_and_se(run_dir: Path) -> tuple[float, float]:
    """The run's final weights on its validation batches in float64: the loss over all targets and, from the
    rows' losses, the ratio estimator's delta-method standard error."""
    cfg = OmegaConf.load(run_dir / "config.yaml")
    model = load_model_from_checkpoint(run_dir / "checkpoints" / "last.ckpt").double()
    nats, targets = [], []
    with torch.no_grad():
        for x, y in build_data(cfg.data, cfg.seed).val:
            logits = model(x).double()
            per_token = F.cross_entropy(logits.transpose(1, 2), y, ignore_index=IGNORE, reduction="none")
            nats.append(per_token.sum(-1))
            targets.append((y != IGNORE).sum(-1).double())
    n, t = torch.cat(nats).numpy(), torch.cat(targets).numpy()
    r, m = n.sum() / t.sum(), len(n)
    return float(r), float(np.sqrt(m / (m - 1) * ((n - r * t) ** 2).sum()) / t.sum())


@pytest.mark.slow
def test_a_quick_grid_on_steps_to_runs_its_rounds_and_reports(tmp_path, capsys):
    folder = tmp_path / "grids" / "ablation"
    folder.mkdir(parents=True)
    (folder / "speed.yaml").write_text(GRID)
    sweep = tmp_path / "sweep"
    done = run_cli(["--config-dir", str(folder.parent), "--multirun", "+ablation=speed", *FAST,
                    "trainer.max_steps=12", "trainer.val_check_interval=12", "logger=none",
                    f"data.cache_dir={tmp_path / 'cache'}", f"hydra.sweep.dir={sweep}"])  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    state = json.loads((sweep / "sweep.json").read_text())
    # slow cannot be decided at 2 seeds (the signed-rank test needs 6), so a second round adds 2 seeds to it and
    # the baseline; the A/A arm reproduces the baseline bit for bit: equivalent at the first look, no more seeds
    assert [r["jobs"] for r in state["rounds"]] == [6, 4], state
    s = report(sweep).set_index("arm")
    assert s.loc["fast_aa", "decision"] == "equivalent" and s.loc["fast_aa", "identical"]
    assert s.loc["slow", "decision"] == "inconclusive" and np.isinf(s.loc["slow", "mde"])
    assert s.loc["slow", "n_pairs"] == 4 and s.loc["fast", "n"] == 4
    crossings: dict[str, list[tuple[float, bool]]] = {}
    for run_dir in sorted(p.parent for p in sweep.glob("*/results.json")):
        crossings.setdefault(run_dir.name.split("_s")[0], []).append(
            crossing(pd.read_csv(run_dir / "metrics.csv"), smooth=2, threshold=5.0))  # fmt: skip
        results = json.loads((run_dir / "results.json").read_text())
        loss, se = val_loss_and_se(run_dir)
        # float32 sums of ~500 targets against float64: a few float32 eps of the loss's scale
        assert results["val_loss"] == pytest.approx(loss, rel=1e-5)
        assert results["val_loss_se"] == pytest.approx(se, rel=1e-4) and se > 0
    for arm, found in crossings.items():  # every run ran 12 steps: one horizon, so the means are the crossings'
        assert s.loc[arm, "mean"] == pytest.approx(np.mean([step for step, _ in found]), rel=1e-12), arm
        assert s.loc[arm, "censored"] == sum(c for _, c in found), arm
    assert s.loc["slow", "censored"] >= 2 and s.loc["fast", "censored"] == 0  # lr 3e-4 mostly stays above 5
    assert s.loc["slow", "delta"] > 0 and s.loc["slow", "mean"] > s.loc["fast", "mean"]  # learns later
    text = (sweep / "summary.md").read_text()
    assert "- A/A arm fast_aa (the baseline's config under its own name): equivalent, as it must be" in text
    assert "no MDE: 4 pairs cannot reach significance" in text
    capsys.readouterr()
