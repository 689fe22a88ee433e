"""Ablation grids end to end: a quick grid under joblib with its report, relaunch and failure handling, dry runs."""

import json
import re
import sys

import pandas as pd
import pytest
from omegaconf import OmegaConf

from analysis.report import report
from tests.workbench.train_helpers import compose_cfg, run_cli
from workbench import train
from workbench.accounting import kv_cache_bytes, training_flops
from workbench.config import ModelConfig
from workbench.model import build_model
from workbench.training.compose import CONF_DIR
from workbench.training.dry_run import dry_run, job_cost
from workbench.training.grid import arm_table, resolve_arm
from workbench.training.sweep import planned_jobs

GRIDS = sorted(p.stem for p in (CONF_DIR / "ablation").glob("*.yaml") if not p.stem.startswith("_"))
RUN_ID = re.compile(r"(.+)_s\d+_[0-9a-f]{10}")  # <arm>_s<seed>_<hash>


def _arms(grid: str, *overrides: str) -> dict:
    return arm_table(OmegaConf.to_container(compose_cfg([f"+ablation={grid}", *overrides], None).ablation))


def _results(sweep_dir):
    return {p.parent.name: json.loads(p.read_text()) for p in sweep_dir.glob("*/results.json")}


@pytest.mark.slow
def test_quick_grid_runs_under_joblib_and_reports_ci_and_p_values(tmp_path):
    sweep = tmp_path / "lgr"
    arms = ["global", "r5_1", "local"]  # the baseline, the control and one more of the grid's six
    out = run_cli(["--multirun", "+ablation=local_global_ratio", "ablation.quick=true", "hydra/launcher=joblib",
                   "optim.lr=3e-3", f"ablation.arm={','.join(arms)}", f"hydra.sweep.dir={sweep}",
                   f"data.cache_dir={tmp_path / 'cache'}"])  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    results = _results(sweep)
    assert len(results) == 3 * 2 and all(r["status"] == "completed" for r in results.values())
    assert {r["threads"] for r in results.values()} == {max(1, (__import__("os").cpu_count() or 1) // 2)}
    assert {name.split("_s")[0] for name in results} == set(arms)
    summary = report(sweep)
    table = pd.read_csv(sweep / "summary.csv")
    assert {"mean", "std", "ci_lo", "ci_hi", "delta", "p_value"} <= set(table.columns)
    assert len(summary) == 3 and summary["n"].eq(2).all() and summary["ci_lo"].notna().all()
    assert summary.loc[~summary["baseline"], "p_value"].notna().any()
    assert "p_value" in (sweep / "summary.md").read_text()
    for name in ("loss_curves", "forest", "val_loss_vs_kv"):
        assert (sweep / f"{name}.png").stat().st_size > 0
    # MFU's FLOPs are the dry run's for every arm (at quick mode's 64 tokens the window spans the sequence, so the
    # arms' counts coincide here; tests/workbench/test_accounting.py separates them at the grid_cpu shape)
    plans = planned_jobs(["+ablation=local_global_ratio", "ablation.quick=true", "optim.lr=3e-3",
                          f"hydra.sweep.dir={sweep}"])  # fmt: skip
    dry = {p[-1].run_dir.name: job_cost(p[-1]).flops_per_token for p in plans}
    for name, r in results.items():
        per_token = r["flops_per_batch"] / (4 * 64)  # quick mode's batch of 4 x 64 tokens, one rank
        assert per_token == pytest.approx(dry[name], rel=0.01) and r["train_flops_per_token"] == per_token, name


@pytest.mark.slow
def test_relaunch_skips_completed_resumes_killed_and_isolates_failures(tmp_path):
    sweep = tmp_path / "np"
    args = ["--multirun", "+ablation=norm_placement", "ablation.quick=true", "ablation.arm=pre,post,broken",
            "optim.lr=3e-3",  # broken: a valid config whose loss overflows in the run (only training can tell)
            "+ablation.arms.broken={optim.lr: 1.0e+30, trainer.precision: 32-true}", "seed=0",
            f"hydra.sweep.dir={sweep}", f"data.cache_dir={tmp_path / 'cache'}"]  # fmt: skip
    first = run_cli(args)
    assert first.returncode == 0, first.stderr[-3000:]
    results = _results(sweep)
    status = {name.split("_s")[0]: r["status"] for name, r in results.items()}
    assert status == {"pre": "completed", "post": "completed", "broken": "failed"}
    broken = next(r for n, r in results.items() if n.startswith("broken"))
    assert "NonFiniteLossError" in broken["error"], broken["error"]
    killed = next(sweep.glob("post_s0_*"))
    (killed / "results.json").unlink()  # as if the job died after its last checkpoint
    second = run_cli(args)
    assert second.returncode == 0, second.stderr[-3000:]
    assert re.search(r"skip pre_s0_\w+: completed", second.stdout)
    assert f"resume {killed.name}" in second.stdout and re.search(r"FAILED broken_s0_\w+", second.stdout)
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == sorted(results)  # same dirs, no new ones
    assert json.loads((killed / "results.json").read_text())["steps"] == 4


def test_dry_run_prices_every_arm_from_the_accounting_and_trains_nothing(tmp_path, capsys):
    overrides = ["+ablation=gqa", "ablation.quick=true", f"hydra.sweep.dir={tmp_path / 'sweep'}"]
    assert dry_run(planned_jobs([*overrides, "dry_run=true"])) == 0
    printed = capsys.readouterr().out
    for arm in ("kv1", "kv2", "mha"):
        cfg = ModelConfig.from_dict(resolve_arm(compose_cfg([*overrides, f"ablation.arm={arm}"], None)).model)
        n = sum(p.numel() for p in build_model(cfg).parameters())  # counted on the built model
        rows = [line.split() for line in printed.splitlines() if line.startswith(f"arm {arm} ")]
        assert len(rows) == 2 and all(r[3] == f"{n:,}" for r in rows), rows  # two quick seeds
        assert rows[0][6] == f"{kv_cache_bytes(cfg, 32768):,}", rows[0]
    assert "6 job(s) in 6 plan(s)" in printed and "time estimate: FLOPs /" in printed
    assert not (tmp_path / "sweep").exists()


def test_the_dry_run_of_a_plan_lists_its_dependencies_once(tmp_path, capsys):
    overrides = ["+ablation=teacher_gap", "ablation.quick=true", "ablation.quick_seeds=[0]", "dry_run=true",
                 f"hydra.sweep.dir={tmp_path / 'sweep'}", f"data.cache_dir={tmp_path / 'cache'}"]  # fmt: skip
    plans = planned_jobs(overrides)
    assert len(plans) == 6 and sum(len(p) for p in plans) == 6 + 6  # 3 arms x 2 rates, each needs its teacher
    dry_run(plans)
    printed = capsys.readouterr().out
    assert printed.count("distill.teacher_model ") == 2  # two teacher sizes, each priced once (distill.teacher_lr)
    assert "8 job(s) in 6 plan(s)" in printed and not (tmp_path / "cache").exists()


@pytest.fixture(scope="module")
def token_cache(tmp_path_factory):
    """One stdlib token cache for every grid of this module."""
    return tmp_path_factory.mktemp("token_cache")


def _some_arms(grid: str, most: int = 4) -> list[str]:
    """The grid's baseline and control, then its other arms in order, `most` in all: what a grid's end-to-end test
    trains (every arm of every grid is planned and validated by the test below it)."""
    spec = compose_cfg([f"+ablation={grid}", "ablation.quick=true"], None).ablation
    first = [a for a in (spec.baseline, spec.control) if a]
    return (first + [a for a in _arms(grid, "ablation.quick=true") if a not in first])[:most]


@pytest.mark.parametrize("grid", [g for g in GRIDS if g != "local_global_ratio"])  # that one: the joblib test above
@pytest.mark.slow
def test_every_shipped_grid_runs_end_to_end_in_quick_mode(grid, tmp_path, token_cache, monkeypatch):
    """The CLI entry point in this process (Hydra's basic launcher runs the jobs here): no second torch import."""
    sweep = tmp_path / grid
    lrs = list(compose_cfg([f"+ablation={grid}"], None).ablation.lrs)[::2]  # a tuned grid: every other rate
    lr_sweep = [f"optim.lr={','.join(map(str, lrs))}"] if lrs else []  # the command line's sweep wins over the grid's
    arms = _some_arms(grid)
    monkeypatch.setattr(sys, "argv", ["workbench.train", "--multirun", f"+ablation={grid}", "ablation.quick=true",
                                      "ablation.quick_seeds=[0]", "trainer.peak_flops=1e11", *lr_sweep,
                                      f"ablation.arm={','.join(arms)}", f"hydra.sweep.dir={sweep}",
                                      f"data.cache_dir={token_cache}"])  # fmt: skip
    train.main()
    results = _results(sweep)
    assert sorted(RUN_ID.fullmatch(name).group(1) for name in results) == sorted(list(arms) * max(len(lrs), 1))
    assert all(r["status"] == "completed" for r in results.values()), {n: r["error"] for n, r in results.items()}
    summary = report(sweep)
    assert sorted(summary["arm"]) == sorted(arms) and summary["n"].eq(1).all() and summary["mean"].notna().all()
    assert (sweep / "summary.md").is_file() and (sweep / "loss_curves.png").stat().st_size > 0


@pytest.mark.parametrize("grid", GRIDS)
@pytest.mark.slow
def test_every_shipped_grid_is_valid_in_quick_and_full_mode(grid, tmp_path):
    """Every job of the full grid and of its quick mode is planned and validated (what the CLI checks first)."""
    full = compose_cfg([f"+ablation={grid}"], None).ablation
    arms = _arms(grid)
    assert full.baseline in arms and len(full.seeds) >= 3
    # full mode at its first seed: the other seeds plan the same arms and rates again (a 6-seed grid is 90 jobs)
    for mode in ("ablation.quick=false", "ablation.quick=true"):
        one_seed = [f"ablation.seeds=[{full.seeds[0]}]"] if mode.endswith("false") else []
        plans = planned_jobs([f"+ablation={grid}", mode, *one_seed, f"hydra.sweep.dir={tmp_path}"])
        assert sorted({p[-1].cfg.ablation.arm for p in plans}) == sorted(arms)
    assert not list(tmp_path.iterdir())


@pytest.mark.slow
def test_scaling_ladder_spends_each_budget_on_every_size():
    """IsoFLOP slices: at each budget every size spends C training FLOPs, counted as MFU counts them (attention
    over attended pairs; more than 6 N D with N counted on the built model), up to the rounding to whole steps;
    the arms carry their budget as the label Approach 2 groups by."""
    grid = compose_cfg(["+ablation=scaling_ladder"], None).ablation
    sizes_at = {}
    for arm in _arms("scaling_ladder"):
        cfg = resolve_arm(compose_cfg(["+ablation=scaling_ladder", f"ablation.arm={arm}"], None))
        n = sum(p.numel() for p in build_model(ModelConfig.from_dict(cfg.model)).parameters())
        model = ModelConfig.from_dict(cfg.model)
        tokens = cfg.trainer.max_steps * cfg.data.batch_size * cfg.data.seq_len
        flops = training_flops(model, cfg.data.seq_len) / cfg.data.seq_len * tokens
        assert flops > 1.02 * 6 * n * tokens, arm  # attention's pairs on top of 6 N D
        budget = cfg.ablation.compute_budget
        assert flops == pytest.approx(budget, rel=0.013), arm
        assert cfg.trainer.max_steps >= cfg.optim.warmup_steps, arm
        sizes_at.setdefault(budget, set()).add(n)
    budgets = [level["ablation.compute_budget"] for level in grid.factors.budget.values()]
    assert sorted(sizes_at) == sorted(budgets)
    assert all(len(sizes) == len(grid.factors.size) >= 3 for sizes in sizes_at.values())
