import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from omegaconf import OmegaConf
from scipy import stats

from benchmarks import ratio_pilot
from benchmarks.ratio_pilot import Pilot
from workbench.accounting import training_flops
from workbench.config import ModelConfig
from workbench.training.sweep import planned_jobs

ROOT = Path(__file__).resolve().parents[2]
LAST = 1000  # the fabricated runs' last logged step (retrieval_gpu's max_steps)
ARMS = ("r5_1", "global")  # the baseline first
H100_BF16_DENSE, ASSUMED_MFU = 989e12, 0.10  # retrieval_gpu's header


def write_run(root: Path, arm: str, seed: int, jump: int | None, *, tokens_per_s: float = 1.0e6, mfu: float = 0.1,
              finished: bool = True) -> None:  # fmt: skip
    """A run dir as training leaves it: train/answer_accuracy every 10 steps, 0.5 before step `jump` and 1.0 from it
    (None: never); a run that was killed has no results.json."""
    run_dir = root / f"{arm}_s{seed}"
    run_dir.mkdir(parents=True)
    config = {"seed": seed, "optim": {"lr": 3e-3}, "model": {"vocab_size": 264},
              "ablation": {"arm": arm, "baseline": "r5_1", "metric": ratio_pilot.STEPS_TO, "smooth": 4,
                           "eval_average": ratio_pilot.EVAL_AVERAGE}}  # fmt: skip
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    steps = np.arange(0, LAST + 1, 10)
    accuracy = np.full(len(steps), 0.5) if jump is None else np.where(steps >= jump, 1.0, 0.5)
    lines = ["step,train/loss,train/answer_accuracy", *(f"{s},1.0,{a}" for s, a in zip(steps, accuracy, strict=True))]
    (run_dir / "metrics.csv").write_text("\n".join(lines) + "\n")
    if finished:
        speed = {"tokens_per_s": tokens_per_s, "mfu": mfu}
        results = {"status": "completed", "val_loss": 1.0, "selection_loss": 1.0, "git_sha": "a" * 40,
                   "kv_cache_bytes": 4096, "params": {"total": 1000}, **speed}  # fmt: skip
        (run_dir / "results.json").write_text(json.dumps(results))


# the accuracy jumps from 0.5 to 1.0 at these steps; a running mean of 4 logged points (every 10 steps) reaches 0.9
# only when all 4 are 1.0 (3 x 1.0 + 0.5 = 0.875), so steps_to = jump + 30
BASE_JUMPS, ARM_JUMPS = [300, 350, 420], [200, 260, 600]


def pilot_runs(root: Path, arm_jumps=ARM_JUMPS, killed: int | None = None):
    """The baseline r5_1 and global at 3 seeds; global's seed `killed` stopped before it wrote results.json."""
    for seed, (b, a) in enumerate(zip(BASE_JUMPS, arm_jumps, strict=True)):
        write_run(root, "r5_1", seed, b, tokens_per_s=1.0e6 + seed, mfu=0.1 + seed / 100)
        write_run(root, "global", seed, a, tokens_per_s=8.0e5 + seed, mfu=0.2, finished=seed != killed)
    return ratio_pilot.load_runs(root, ARMS)


def test_read_gives_each_arms_median_sd_solved_share_and_speed(tmp_path):
    r = ratio_pilot.read(pilot_runs(tmp_path), ARMS)
    base, arm = np.array(BASE_JUMPS) + 30.0, np.array(ARM_JUMPS) + 30.0
    for name, steps in (("r5_1", base), ("global", arm)):
        assert r.at[name, "steps_median"] == np.median(steps)
        assert r.at[name, "steps_sd"] == pytest.approx(np.std(steps, ddof=1), rel=1e-12)
        assert (r.at[name, "n"], r.at[name, "censored"], r.at[name, "solved"]) == (3, 0, 1.0)
    assert r.at["r5_1", "tokens_per_s"] == pytest.approx(1.0e6 + 1) and r.at["r5_1", "mfu"] == pytest.approx(0.11)
    d = arm - base
    assert r.at["global", "delta"] == pytest.approx(d.mean()) and r.at["global", "n_pairs"] == 3
    assert r.at["global", "sd_d"] == pytest.approx(np.std(d, ddof=1), rel=1e-12)


def test_a_run_that_never_gets_there_is_censored_and_unsolved_and_a_killed_one_is_not_counted(tmp_path):
    runs = pilot_runs(tmp_path, [200, None, 600], killed=2)
    r = ratio_pilot.read(runs, ARMS)
    assert (r.at["global", "n"], r.at["global", "failed"], r.at["global", "censored"]) == (2, 1, 1)
    assert r.at["global", "solved"] == 0.5
    assert r.at["global", "steps_median"] == np.median([230.0, LAST])  # censored at its last step
    d = np.array([230.0 - 330.0, LAST - 380.0])  # seed 2 has no pair
    assert r.at["global", "sd_d"] == pytest.approx(np.std(d, ddof=1), rel=1e-12) and r.at["global", "n_pairs"] == 2


def test_the_mdes_have_the_power_they_claim(tmp_path):
    r = ratio_pilot.read(pilot_runs(tmp_path), ARMS).loc["global"]
    sd = r["sd_d"]
    for n in ratio_pilot.MDE_SEEDS:  # paired t: P(|T| > t_crit) = 0.8 at the MDE, T noncentral t (scipy, by hand)
        crit, nc = stats.t.ppf(0.975, n - 1), r[f"mde_t_{n}"] * np.sqrt(n) / sd
        assert stats.nct.sf(crit, n - 1, nc) + stats.nct.cdf(-crit, n - 1, nc) == pytest.approx(0.8, abs=1e-6)
    # signed-rank: over 4 pairs the smallest two-sided exact p is 2 / 2**4 = 0.125 > 0.05, so no shift is detected
    assert r["mde_rank_4"] == np.inf
    rng = np.random.default_rng(1)
    for n in (8, 16):  # scipy's exact Wilcoxon test on fresh normal differences rejects 80% of the time at the MDE
        z = rng.normal(size=(4000, n))
        power = (stats.wilcoxon(z * sd + r[f"mde_rank_{n}"], axis=1, method="exact").pvalue < 0.05).mean()
        assert power == pytest.approx(0.8, abs=0.035)  # 4,000 draws: binomial SE 0.0063
    # share solved: the baseline solved every seed, so every discordant pair goes down and McNemar's exact p is
    # 2 x 0.5**K: K >= 6 failures of the arm are needed; the MDE is the smallest drop with P(Bin(n, drop) >= 6) >= 0.8
    assert r["mde_solved_4"] == np.inf
    for n in (8, 16):
        drop = next(d / 100 for d in range(1, 101) if stats.binom.sf(5, n, d / 100) >= 0.8)
        assert r[f"mde_solved_{n}"] == pytest.approx(drop)


def test_rows_name_each_arm_and_the_comparison(tmp_path):
    reading = ratio_pilot.read(pilot_runs(tmp_path), ARMS)
    rows = dict(ratio_pilot.rows(reading, "r5_1", 3))
    assert list(rows) == ["r5_1 (baseline)", "global", "global - r5_1"]
    assert rows["global"].startswith(f"{ratio_pilot.STEPS_TO}: median 290 steps, seed SD 216, 0 of 3 censored")
    assert "800,001 tokens/s, MFU 20.0%" in rows["global"] and "3 of 3 seeds completed" in rows["global"]
    assert "MDE at 4/8/16 seeds (α 0.05 two-sided, power 0.8): signed-rank inf/" in rows["global - r5_1"]
    assert "share solved (McNemar) inf/" in rows["global - r5_1"]


def test_train_stops_the_command_at_its_time(tmp_path):
    code, wall = ratio_pilot.train(Pilot(sweep_dir=str(tmp_path / "sweep")), ROOT, 1.0)
    assert code is None and wall < 10


def test_the_experiment_is_sized_as_its_header_says():
    """12 layers so 5:1 has two global layers; window T/16; buckets inside one window, within 1.5 windows, within
    and beyond twelve local layers' reach; about a minute a run at the assumed 10% MFU of an H100."""
    (plan,) = planned_jobs(["experiment=retrieval_gpu", "model.layer_pattern=5:1"], multirun=False)
    cfg = plan[-1].cfg
    model = ModelConfig.from_dict(OmegaConf.to_container(cfg.model, resolve=True))
    assert model.layer_types.count("global") == 2 and model.n_layers == 12
    d, w = cfg.data, model.window
    assert (d.source, d.seq_len, w * 16) == ("retrieval", 1024, 1024)
    assert list(d.distance_edges) == [3, w, w * 3 // 2, model.n_layers * w, d.seq_len]
    seconds = {
        pattern: cfg.trainer.max_steps * d.batch_size * training_flops(model.replace(layer_pattern=pattern), d.seq_len)
        / (ASSUMED_MFU * H100_BF16_DENSE)
        for pattern in ("global", "5:1")
    }  # fmt: skip
    assert 45 < seconds["5:1"] < seconds["global"] < 90


@pytest.mark.slow
def test_the_cli_dry_run_plans_and_prices_the_pilot(tmp_path):
    pilot = Pilot(sweep_dir=str(tmp_path / "sweep"))
    p = subprocess.run([sys.executable, *pilot.train_argv(), "dry_run=true"], cwd=ROOT, capture_output=True,
                       text=True, timeout=300)  # fmt: skip
    assert p.returncode == 0, p.stderr[-2000:]
    assert f"dry run: {pilot.runs} job(s) in {pilot.runs} plan(s)" in p.stdout
    for arm in pilot.arms:
        for seed in range(pilot.seeds):
            assert f"arm {arm}  " in p.stdout and f" {arm}_s{seed}_" in p.stdout
    assert "first round (the grid as written)" in p.stdout and "est. min" in p.stdout
    assert not (tmp_path / "sweep").exists()


TINY = ("model.n_layers=2", "model.d_model=32", "model.mlp_hidden=64", "model.n_heads=2", "model.n_kv_heads=1",
        "model.window=8", "model.max_seq_len=32", "data.seq_len=32", "data.batch_size=8", "data.distance_edges=null",
        "data.val_batches=1", "trainer.max_steps=20", "trainer.val_check_interval=20", "trainer.log_every_n_steps=1",
        "optim.warmup_steps=1", "threads=1", "trainer.precision=32-true")  # fmt: skip


@pytest.mark.slow
def test_the_probe_trains_through_the_cli_and_reads_every_run(tmp_path):
    """The whole path the GPU step takes, on CPU at a toy size (about 45 s): the CLI's sweep, then the reading."""
    pilot = Pilot(seeds=2, sweep_dir=str(tmp_path / "sweep"), budget_s=400, overrides=TINY)
    out = ratio_pilot.report(pilot, ROOT)
    assert out["ok"] and out["result"].startswith("4 of 4 runs completed in ")
    labels = [label for label, _ in out["rows"]]
    assert labels == ["r5_1 (baseline)", "global", "global - r5_1"]
    assert all("2 of 2 seeds completed, 0 failed" in text for _, text in out["rows"][:2])
