"""The sweeper owns the job list: a grid in the user's own folder is validated like a shipped one under every Hydra
flag, and the rounds bracket each arm's rate and add seeds until decided."""

from __future__ import annotations

import json
import math
import re
import shutil
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from analysis.report import report
from tests.workbench.train_helpers import FAST, run_cli
from workbench import train
from workbench.training.sweep import planned_jobs

GRID = """# @package _global_
defaults:
  - _base
ablation:
  name: mine
  baseline: a
  margin: 0.05
  seeds: {seeds}
  lrs: {lrs}
  arms:
{arms}
"""
ARMS = "    a: {model.window: 16}\n    b: {model.window: 32}"
REPO = Path(__file__).resolve().parents[3]


def write_grid(folder: Path, name: str = "mine", seeds: str = "[0]", lrs: str = "[3.0e-3]", arms: str = ARMS,
               header: bool = True) -> Path:  # fmt: skip
    text = GRID.format(seeds=seeds, lrs=lrs, arms=arms)
    (folder / "ablation").mkdir(parents=True, exist_ok=True)
    (folder / "ablation" / f"{name}.yaml").write_text(text if header else text.split("\n", 1)[1])
    return folder


def cli(monkeypatch, capsys, argv: list[str]) -> tuple[int, str, str]:
    """`python -m workbench.train <argv>` in this process: (exit code, stdout, stderr)."""
    monkeypatch.setattr(sys, "argv", ["workbench.train", *argv])
    code = 0
    try:
        train.main()
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err


BAD_ARM = "+ablation.arms.bad={optim.lrr: 0.5}"


@pytest.mark.parametrize(
    "argv",
    [
        pytest.param(["--multirun", "+ablation=mine", BAD_ARM], id="multirun", marks=pytest.mark.slow),
        # the flag after the overrides (the fast tier's multirun)
        pytest.param(["+ablation=mine", BAD_ARM, "hydra.sweep.dir=SWEEP", "--multirun"], id="flag-after"),
        pytest.param(["-m", "+ablation=mine", BAD_ARM, "dry_run=true"], id="dry-run", marks=pytest.mark.slow),
        pytest.param(["+ablation=mine", BAD_ARM, "ablation.arm=bad"], id="run"),  # a single run of the arm
    ],
)
def test_a_grid_in_the_users_folder_is_validated_like_a_shipped_one(argv, tmp_path, monkeypatch, capsys):
    folder = write_grid(tmp_path / "grids")
    where = [f"hydra.sweep.dir={tmp_path / 'sweep'}", f"hydra.run.dir={tmp_path / 'run'}"]
    argv = [a.replace("SWEEP", str(tmp_path / "sweep")) for a in argv]
    flags_last = argv[-1].startswith("-")  # argparse takes no override after a trailing flag: Hydra's own rule
    argv = [*argv[:-1], *where, argv[-1]] if flags_last else [*argv, *where]
    code, _, err = cli(monkeypatch, capsys, ["--config-dir", str(folder), *argv])
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: grid mine, arm bad: unknown config key 'optim.lrr'"), err
    assert "did you mean lr" in lines[0] and "Traceback" not in err
    assert not (tmp_path / "sweep").exists() and not (tmp_path / "run").exists()


def test_the_dry_run_of_a_users_grid_prices_its_jobs_and_trains_nothing(tmp_path, monkeypatch, capsys):
    folder = write_grid(tmp_path / "grids", seeds="[0, 1]", lrs="[1.0e-3, 3.0e-3]")
    code, out, err = cli(monkeypatch, capsys, ["-cd", str(folder), "-m", "+ablation=mine", "dry_run=true",
                                               f"hydra.sweep.dir={tmp_path / 'sweep'}"])  # fmt: skip
    assert code == 0, err
    assert "8 job(s) in 8 plan(s)" in out  # 2 arms x 2 seeds x 2 rates
    assert "first round (the grid as written)" in out and "worst case, every round to its cap" in out
    assert not (tmp_path / "sweep").exists()


def test_a_grid_file_without_its_package_line_is_one_error_saying_what_to_add(tmp_path, monkeypatch, capsys):
    folder = write_grid(tmp_path / "grids", header=False)
    code, _, err = cli(monkeypatch, capsys, ["--config-dir", str(folder), "-m", "+ablation=mine", "dry_run=true"])
    assert code == 2 and "Traceback" not in err
    assert "# @package _global_" in err and "mine" in err, err


def test_hydra_flags_cfg_info_and_config_name_pass_through(tmp_path, monkeypatch, capsys):
    folder = write_grid(tmp_path / "grids")
    code, out, _ = cli(monkeypatch, capsys, ["--config-dir", str(folder), "+ablation=mine", "--cfg", "job"])
    assert code == 0 and "name: mine" in out and "baseline: a" in out
    code, out, _ = cli(monkeypatch, capsys, ["--info", "searchpath"])
    assert code == 0 and "workbench/conf" in out
    (tmp_path / "grids" / "other.yaml").write_text("defaults:\n  - train\n  - _self_\nseed: 7\n")
    code, out, err = cli(monkeypatch, capsys, ["-cd", str(tmp_path / "grids"), "--config-name", "other", "--cfg",
                                               "job"])  # fmt: skip
    assert code == 0 and "seed: 7" in out, err
    code, _, err = cli(monkeypatch, capsys, ["-cd", str(tmp_path / "grids"), "-cn", "other", "model.windoww=3"])
    assert code == 2 and "model.windoww" in err and "did you mean window" in err


def _statuses(sweep: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in sweep.glob("*/results.json")}


@pytest.mark.slow
def test_rates_below_the_optimum_are_bracketed_until_it_is_interior(tmp_path):
    """Every rate the grid gives lies far below the optimum: the sweeper adds rates upward until each arm's best is
    interior, and the report decides; with `ablation.bracket=false` the same grid reports `unbracketed`."""
    folder = write_grid(tmp_path / "grids", seeds="[0, 1]", lrs="[1.0e-4, 3.0e-4]")
    args = ["--config-dir", str(folder), "--multirun", "+ablation=mine", "ablation.margin=1.0",
            "ablation.lr_bounds=[1.0e-6,0.3]", *FAST, "trainer.max_steps=12", "logger=none"]  # fmt: skip
    sweep = tmp_path / "bracketed"
    done = run_cli([*args, f"hydra.sweep.dir={sweep}"])
    assert done.returncode == 0, done.stderr[-3000:]
    state = json.loads((sweep / "sweep.json").read_text())
    assert len(state["rounds"]) > 1 and "is the top of those tried" in state["rounds"][1]["why"]
    summary = report(sweep)
    for row in summary.to_dict("records"):
        rates = [float(x) for x in str(row["lrs_tried"]).split(";")]
        assert row["bracketed"] and len(rates) > 2, row  # rates were added above the grid's
        interior = rates[0] < row["best_lr"] < rates[-1]
        assert interior or row["best_lr"] * state["lr_step"] > 0.3, row  # else the next rate would pass the bound
    assert set(summary["decision"]) <= {"baseline", "better", "worse", "equivalent", "inconclusive"}
    fixed = tmp_path / "fixed"
    once = run_cli([*args, "ablation.bracket=false", f"hydra.sweep.dir={fixed}"])
    assert once.returncode == 0, once.stderr[-3000:]
    assert len(_statuses(fixed)) == 2 * 2 * 2  # the grid as written: 2 arms x 2 seeds x 2 rates, no round added
    assert set(report(fixed)["decision"]) == {"baseline", "unbracketed"}


@pytest.mark.slow
def test_seeds_until_decided_stop_a_hopeless_arm_early_and_never_split_an_identical_one(tmp_path):
    arms = "    a: {model.window: 16}\n    same: {model.window: 16}\n    hopeless: {optim.lr: 1.0e-7}"
    folder = write_grid(tmp_path / "grids", seeds="[0, 1, 2]", lrs="[]", arms=arms)
    sweep = tmp_path / "seeds"
    done = run_cli(
        [
            "--config-dir",
            str(folder),
            "--multirun",
            "+ablation=mine",
            "ablation.max_seeds=9",
            "optim.lr=3e-3",
            *FAST,
            "trainer.max_steps=12",
            "logger=none",
            f"hydra.sweep.dir={sweep}",
        ]
    )
    assert done.returncode == 0, done.stderr[-3000:]
    seeds = pd.Series({name: r["seed"] for name, r in _statuses(sweep).items()})
    per_arm = seeds.groupby(lambda name: name.split("_s")[0]).nunique()
    assert per_arm["hopeless"] == 3 < 9  # decided at the first look
    summary = report(sweep).set_index("arm")
    assert summary.loc["hopeless", "decision"] == "worse"
    assert summary.loc["same", "decision"] not in ("better", "worse")


def test_a_relaunch_into_a_sweep_made_by_the_old_code_skips_every_finished_run(tmp_path, monkeypatch, capsys):
    """tests/assets/sweep_1433776: `+ablation=gqa ablation.quick=true ablation.quick_seeds=[0]` run by the code before
    the sweeper (commit 1433776). Today's sweeper computes the same ids, so it finds every run and trains nothing."""
    sweep = tmp_path / "gqa"
    shutil.copytree(Path(__file__).parents[2] / "assets" / "sweep_1433776", sweep)
    before = {p: p.read_text() for p in sweep.rglob("results.json")}
    code, out, err = cli(monkeypatch, capsys, ["--multirun", "+ablation=gqa", "ablation.quick=true",
                                               "ablation.quick_seeds=[0]", f"hydra.sweep.dir={sweep}",
                                               f"data.cache_dir={tmp_path / 'cache'}"])  # fmt: skip
    assert code == 0, err
    assert sorted(re.findall(r"skip (\S+): completed", out)) == sorted(p.parent.name for p in before)
    assert {p: p.read_text() for p in sweep.rglob("results.json")} == before
    assert not (tmp_path / "cache").exists()  # nothing trained, not even the data prepared


@pytest.mark.slow
def test_a_grid_with_rounds_runs_the_same_through_submitit_and_joblib(tmp_path):
    """Rounds through two launchers: each arm's rate is bracketed by a second round (3e-3, then 9e-3; the bounds close
    both sides), and the run dirs and their results are the same whichever launcher ran them."""
    folder = write_grid(tmp_path / "grids", lrs="[3.0e-3]")
    args = ["--config-dir", str(folder), "--multirun", "+ablation=mine", "ablation.lr_bounds=[2.0e-3,1.0e-2]", *FAST,
            "trainer.max_steps=8", "logger=none", f"data.cache_dir={tmp_path / 'cache'}"]  # fmt: skip
    losses = {}
    for launcher in ("submitit_local", "joblib"):
        sweep = tmp_path / launcher
        extra = ["hydra.launcher.cpus_per_task=1", "hydra.launcher.timeout_min=10"] if launcher != "joblib" else []
        done = run_cli([*args, f"hydra/launcher={launcher}", *extra, f"hydra.sweep.dir={sweep}"])
        assert done.returncode == 0, done.stderr[-3000:]
        state = json.loads((sweep / "sweep.json").read_text())
        assert [r["jobs"] for r in state["rounds"]] == [2, 2], state  # 2 arms at 3e-3, then at 9e-3
        losses[launcher] = {name: r["val_loss"] for name, r in _statuses(sweep).items()}
    assert losses["submitit_local"] == losses["joblib"] and len(losses["joblib"]) == 4


@pytest.mark.slow
def test_a_pilot_measures_the_noise_and_stops_a_design_that_cannot_reach_its_margin(tmp_path):
    """`ablation.pilot_seeds`: the baseline trains at 2 seeds first; from its seed SD the sweeper prints each arm's
    MDE and the seeds the margin needs, and stops before the arms train when even `max_seeds` cannot reach it."""
    folder = write_grid(tmp_path / "grids", seeds="[0, 1, 2]", lrs="[]")
    sweep = tmp_path / "pilot"
    args = ["--config-dir", str(folder), "--multirun", "+ablation=mine", "ablation.pilot_seeds=2", "optim.lr=3e-3",
            "ablation.margin=1e-6", "ablation.max_seeds=4", *FAST, "trainer.max_steps=8", "logger=none",
            f"hydra.sweep.dir={sweep}"]  # fmt: skip
    stopped = run_cli(args)
    assert stopped.returncode == 2 and "Traceback" not in stopped.stderr
    assert "underpowered: the margin 1e-06 needs more seeds" in stopped.stderr, stopped.stderr[-2000:]
    assert re.search(r"b: MDE [\d.e+-]+ at 3 seeds, [\d.e+-]+ at 4; the margin 1e-06 needs", stopped.stdout)
    assert sorted(name.split("_s")[0] + str(r["seed"]) for name, r in _statuses(sweep).items()) == ["a0", "a1"]
    dry = run_cli([*args, "dry_run=true"])  # the dry run reads the pilot's finished runs
    assert dry.returncode == 0 and "power: the baseline's seed SD" in dry.stdout, dry.stderr[-2000:]
    going = run_cli([*args, "ablation.underpowered=run", "ablation.max_seeds=null"])
    assert going.returncode == 0, going.stderr[-2000:]
    assert len(_statuses(sweep)) == 2 * 3  # asked to run anyway: every arm at the grid's seeds


def test_make_runs_grid_plans_on_its_experiment(tmp_path):
    """The Makefile's `make run` command (its overrides read from the Makefile) plans every job of its first round:
    arms x rates x seeds of its grid, on the retrieval source, with none of the text sources' keys quick mode sets."""
    line = next(ln for ln in (REPO / "Makefile").read_text().splitlines() if "+ablation=main_local_global" in ln)
    overrides = [t for t in line.split() if "=" in t and not t.startswith(("OMP_", "hydra"))]
    assert overrides == ["+ablation=main_local_global", "experiment=reach_cpu"]
    plans = planned_jobs([*overrides, f"hydra.sweep.dir={tmp_path}"])
    assert len(plans) == 3 * 3 * 6  # arms x rates x seeds
    assert {p[-1].cfg.data.source for p in plans} == {"retrieval"}


@pytest.mark.slow
def test_a_stability_grid_goes_up_to_each_arms_divergence_edge_and_goes_on_past_diverged_runs(tmp_path):
    """`ablation.to_divergence`: rates go up (x10) past the optimum until the arm's top rate diverges: at 1.0 this
    model's loss ends far above ln vocab (recorded `completed`, read as diverged). The arm `nan` (logits x 1e30)
    fails with a NaN loss at every rate, each recorded `failed`, and the grid goes on around it."""
    arms = "    a: {model.attn_logit: none}\n    nan: {model.attn_logit: none, model.query_pre_attn_scalar: 1.0e-60}"
    folder = write_grid(tmp_path / "grids", seeds="[0]", lrs="[1.0e-3, 1.0e-2]", arms=arms)
    sweep = tmp_path / "edge"
    done = run_cli(["--config-dir", str(folder), "--multirun", "+ablation=mine", "ablation.to_divergence=true",
                    "ablation.stable_within=0.5", "ablation.lr_bounds=[1.0e-4,1.0e+3]", *FAST, "trainer.max_steps=6",
                    "logger=none", f"hydra.sweep.dir={sweep}"])  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    statuses = {p.name: (yaml.safe_load((p / "config.yaml").read_text())["optim"]["lr"],
                         json.loads((p / "results.json").read_text())) for p in sweep.glob("*_s0_*")}  # fmt: skip
    a = {lr: r for name, (lr, r) in statuses.items() if name.startswith("a_")}
    assert sorted(a) == [1e-3, 1e-2, 0.1, 1.0], sorted(a)
    assert all(r["status"] == "completed" for r in a.values()) and a[1.0]["val_loss"] > math.log(264)
    nan_runs = [r for name, (_, r) in statuses.items() if name.startswith("nan_")]
    assert nan_runs and all(r["status"] == "failed" and "NonFiniteLossError" in r["error"] for r in nan_runs)
    why = " ".join(r["why"] for r in json.loads((sweep / "sweep.json").read_text())["rounds"])
    assert "a's top rate 0.1 did not diverge: adding 1" in why
    summary = report(sweep).set_index("arm")
    below = {lr: r["val_loss"] for lr, r in a.items() if r["val_loss"] < math.log(264)}  # 1 seed: a run is a rate
    assert summary.loc["a", "max_stable_lr"] == max(lr for lr, v in below.items() if v <= min(below.values()) + 0.5)
    assert not summary.loc["a", "top_stable"]
    assert math.isnan(summary.loc["nan", "max_stable_lr"])
