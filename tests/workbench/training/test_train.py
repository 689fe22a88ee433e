"""Training end to end: what a run leaves behind, logger modes, resume exactness, and that models learn."""

import csv
import json
import math
import sys
from collections import Counter

import numpy as np
import pytest

from tests.tiers import tiered
from tests.workbench.train_helpers import FAST, compose_cfg, run_cli
from workbench import train as train_cli
from workbench.data import build_data
from workbench.training.jobs import train

RESULT_KEYS = {"train_loss", "val_loss", "val_bpb", "tokens_seen", "steps", "wall_time_s", "tokens_per_s", "mfu",
               "params", "kv_cache_bytes", "seed", "git_sha", "git_dirty", "torch_version", "device",
               "status"}  # fmt: skip


@pytest.mark.slow
def test_cli_end_to_end_leaves_a_complete_run_dir(tmp_path):
    run_dir = tmp_path / "run"
    args = ["model=tiny", "data=stdlib", "trainer.max_steps=6", "trainer.val_check_interval=3", "logger=none",
            "seed=3", f"hydra.run.dir={run_dir}", f"data.cache_dir={tmp_path / 'cache'}", *FAST]  # fmt: skip
    out = run_cli(args)
    assert out.returncode == 0, out.stderr[-3000:]
    results = json.loads((run_dir / "results.json").read_text())
    assert set(results) >= RESULT_KEYS
    assert results["status"] == "completed" and results["steps"] == 6 and results["seed"] == 3
    assert results["tokens_seen"] == 6 * 4 * 64 and results["tokens_per_s"] > 0 and results["mfu"] > 0
    assert results["data"]["content_hash"] and math.isfinite(results["val_bpb"])
    assert (run_dir / "config.yaml").is_file() and (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert (run_dir / "checkpoints" / "best.ckpt").is_file()
    header = next(csv.reader((run_dir / "metrics.csv").open()))
    assert {
        "train/loss",
        "val/loss",
        "val/bpb",
        "train/lr",
        "train/grad_norm",
        "train/device/items_per_sec",
        "train/device/mfu",
    } <= set(header)
    assert not list(run_dir.rglob("*wandb*")), "logger=none must write nothing of W&B"


@pytest.mark.slow
def test_offline_wandb_writes_its_run_under_the_run_dir(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    cfg = compose_cfg(["logger=wandb", "logger.group=g1", "logger.tags=[a,b]", "trainer.max_steps=2",
                       "trainer.val_check_interval=2", *FAST], tmp_path / "cache")  # fmt: skip
    ids = []
    for name in ("run", "next"):  # two runs in one process, as a grid worker runs its jobs: one W&B run each
        results = train(cfg, tmp_path / name)
        runs = list((tmp_path / name / "wandb").glob("offline-run-*"))
        assert len(runs) == 1 and list(runs[0].glob("*.wandb"))
        assert results["wandb"] and str(tmp_path / name) in results["wandb"]
        assert (tmp_path / name / "metrics.csv").is_file()
        ids.append(runs[0].name.rsplit("-", 1)[-1])
    assert ids[0] != ids[1]


def test_resume_matches_an_uninterrupted_run(tmp_path):
    common = ["logger=csv", "optim.total_steps=8", "trainer.val_check_interval=4", *FAST]
    full = train(compose_cfg([*common, "trainer.max_steps=8"], tmp_path / "cache"), tmp_path / "full")
    train(compose_cfg([*common, "trainer.max_steps=4"], tmp_path / "cache"), tmp_path / "split")
    resumed = train(
        compose_cfg([*common, "trainer.max_steps=8", "resume=true"], tmp_path / "cache"), tmp_path / "split"
    )
    assert resumed["steps"] == full["steps"] == 8
    for key in ("train_loss", "val_loss", "val_bpb"):
        assert resumed[key] == pytest.approx(full[key], abs=1e-6), key
    steps = [int(r["step"]) for r in csv.DictReader((tmp_path / "split" / "metrics.csv").open()) if r["train/loss"]]
    assert steps == sorted(set(steps)) and len(steps) == 8


def _unigram_bits(tokens: np.ndarray) -> float:
    counts = np.array(list(Counter(tokens.tolist()).values()), dtype=np.float64)
    p = counts / counts.sum()
    return float(-(p * np.log2(p)).sum())


@pytest.mark.slow
def test_tiny_beats_the_unigram_byte_entropy_of_the_val_split(tmp_path):
    # 60 steps: val bpb 3.62 against the unigram's 4.60 (200 steps: 2.89), at under a third of the time
    overrides = ["model=tiny", "logger=none", "trainer.max_steps=60", "trainer.val_check_interval=60",
                 "data.seq_len=128", "data.batch_size=8", "data.val_tokens=8192", "optim.warmup_steps=6",
                 "trainer.progress_bar=false"]  # fmt: skip
    cfg = compose_cfg(overrides, tmp_path / "cache")
    bundle = build_data(cfg.data, cfg.seed)
    val = np.concatenate([x.flatten().numpy() for x, _ in bundle.val])
    entropy = _unigram_bits(val[val < 256])
    results = train(cfg, tmp_path / "run")
    assert results["val_bpb"] < entropy, (results["val_bpb"], entropy)


# A 2-layer Gemma-shaped tiny model on MQAR. init_std=0.1, not the preset's 0.02: from 0.02 the attention logits start
# near zero and the recall circuit (a previous-token head feeding a key-matching head) sits for > 1,000 steps on the
# plateau where the model only guesses among the values in its context; from 0.1 it leaves it after 150-250 steps
# (seeds 0-4), then reaches ~1.0 within 50. A constant lr after warmup: a cosine decay slows the escape.
MQAR = ["model=tiny", "model.n_layers=2", "model.d_model=64", "model.mlp_hidden=128", "model.n_heads=2",
        "model.n_kv_heads=2", "model.init_std=0.1", "data=mqar", "data.num_pairs=4", "data.num_queries=8",
        "data.num_keys=32", "data.num_values=32", "optim.schedule=constant", "optim.warmup_steps=20",
        "trainer.max_steps=500", "trainer.val_check_interval=500", "logger=none",
        "trainer.progress_bar=false"]  # fmt: skip


@pytest.mark.slow
def test_global_attention_tiny_learns_mqar(tmp_path):
    """Recall, not guessing: far above both 1 / num_values and the 1 / num_pairs of guessing among context values."""
    # 300 steps: accuracy 0.996 (seed 0, escaping the plateau before step 250); the local test keeps 500
    steps = ["trainer.max_steps=300", "trainer.val_check_interval=300"]
    results = train(compose_cfg([*MQAR, "model.layer_pattern=global", *steps], None), tmp_path / "run")
    chance, guess = results["data"]["chance_accuracy"], results["data"]["context_guess_accuracy"]
    assert (chance, guess) == (1 / 32, 1 / 4)
    assert results["val_accuracy"] > 0.9, results["val_accuracy"]


@pytest.mark.slow
def test_local_attention_that_cannot_see_the_pairs_only_guesses(tmp_path):
    """The control: windows of 2 let two layers see the query, the value before it and that value's key, not the pairs.

    The best such a model can do is copy that value when the key repeats (probability 1 / num_pairs) and otherwise
    guess among the other values: the context-guessing level, however long it trains.
    """
    results = train(compose_cfg([*MQAR, "model.layer_pattern=local", "model.window=2"], None), tmp_path / "run")
    guess, num_values = results["data"]["context_guess_accuracy"], round(1 / results["data"]["chance_accuracy"])
    best_without_recall = guess + (1 - guess) / (num_values - 1)
    assert results["val_accuracy"] < best_without_recall + 0.05, results["val_accuracy"]


OWN_GRID = """# @package _global_
defaults:
  - _base
  - _self_

ablation:
  name: my_window
  baseline: w32
  control: w2
  margin: 0.02
  arms:
    w2: {model.window: 2}
    w32: {model.window: 32}
"""


def _cli(monkeypatch, *args: str) -> int:
    """`python -m workbench.train <args>` in this process; its exit status."""
    monkeypatch.setattr(sys, "argv", ["workbench.train", *args])
    try:
        train_cli.main()
    except SystemExit as e:
        return int(e.code or 0) if not isinstance(e.code, str) else 1
    return 0


def _own_folder(tmp_path, grid: str = OWN_GRID):
    (tmp_path / "mygrids" / "ablation").mkdir(parents=True)
    (tmp_path / "mygrids" / "ablation" / "my_window.yaml").write_text(grid)
    return tmp_path / "mygrids"


@pytest.mark.parametrize("flag", tiered(["--config-dir", "-cd", "--config-dir="], ["--config-dir"]))
def test_a_grid_in_a_folder_of_your_own_is_planned_and_priced_like_a_shipped_one(flag, tmp_path, monkeypatch, capsys):
    """`--config-dir` (Hydra's own flag) reaches the planning and the dry run, not only Hydra's launch."""
    folder, sweep = _own_folder(tmp_path), tmp_path / "sweep"
    where = [f"{flag}{folder}"] if flag.endswith("=") else [flag, str(folder)]
    args = ["--multirun", "+ablation=my_window", "ablation.quick=true", "dry_run=true", f"hydra.sweep.dir={sweep}"]
    assert _cli(monkeypatch, *where, *args) == 0
    rows = [line.split()[1] for line in capsys.readouterr().out.splitlines() if line.startswith("arm ")]
    assert sorted(rows) == ["w2", "w2", "w32", "w32"]  # two quick seeds per arm
    assert not sweep.exists()
    assert _cli(monkeypatch, *args) == 2  # the same grid without the folder: an unknown option
    assert "ablation: got 'my_window'" in capsys.readouterr().err


def test_an_own_grid_with_a_typo_or_a_missing_folder_is_one_error_line(tmp_path, monkeypatch, capsys):
    folder = _own_folder(tmp_path, OWN_GRID.replace("w32: {model.window: 32}", "w32: {model.windw: 32}"))
    args = ["--multirun", "+ablation=my_window", "dry_run=true", f"hydra.sweep.dir={tmp_path / 'sweep'}"]
    assert _cli(monkeypatch, "--config-dir", str(folder), *args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: grid my_window, arm w32: unknown config key 'model.windw'") and "window" in err
    assert _cli(monkeypatch, "--config-dir", str(tmp_path / "absent"), *args) == 2
    assert capsys.readouterr().err.startswith(f"error: --config-dir: got '{tmp_path / 'absent'}', not a folder")
    assert not (tmp_path / "sweep").exists()


@pytest.mark.slow
def test_an_own_grid_trains_end_to_end_through_hydra_with_config_dir(tmp_path, monkeypatch):
    folder, sweep = _own_folder(tmp_path), tmp_path / "sweep"
    args = ["--config-dir", str(folder), "--multirun", "+ablation=my_window", "ablation.quick=true",
            "ablation.quick_seeds=[0]", "trainer.peak_flops=1e11", f"hydra.sweep.dir={sweep}",
            f"data.cache_dir={tmp_path / 'cache'}"]  # fmt: skip
    assert _cli(monkeypatch, *args) == 0
    results = {p.parent.name: json.loads(p.read_text()) for p in sweep.glob("*/results.json")}
    assert sorted(name.split("_s0_")[0] for name in results) == ["w2", "w32"]
    assert all(r["status"] == "completed" for r in results.values())
