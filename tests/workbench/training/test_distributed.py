"""Multi-device training on 2 CPU ranks (gloo): DDP and FSDP2 with batch b per rank retrace one process with 2b.

The multi-rank runs go through the CLI in a subprocess (DDP inside the pytest process can hang); Lightning
re-executes the Hydra command for rank 1, so this also covers the entry point's multi-process path.
"""

from __future__ import annotations

import csv
import importlib.util
import json
from pathlib import Path

import pytest
import torch

from tests.workbench.train_helpers import compose_cfg, run_cli
from workbench.training.errors import ConfigError
from workbench.training.jobs import train
from workbench.training.schema import STRATEGIES
from workbench.training.strategy import build_strategy
from workbench.training.sweep import planned_jobs

# a 2-layer tiny model on synthetic recall data (no token cache for the ranks to race over); global batch 8
ARGS = ["model=tiny", "model.n_layers=2", "model.d_model=64", "model.mlp_hidden=128", "data=mqar",
        "data.batch_size=8", "data.num_pairs=4", "data.num_queries=8", "data.num_keys=32", "data.num_values=32",
        "data.val_batches=2", "trainer.accelerator=cpu", "trainer.max_steps=4", "trainer.val_check_interval=4",
        "trainer.log_every_n_steps=1", "trainer.throughput_window=2", "trainer.peak_flops=1e11",
        "trainer.progress_bar=false", "optim.warmup_steps=1", "logger=csv", "trainer.precision=32-true"]  # fmt: skip


def _curve(run_dir: Path, key: str) -> list[float]:
    with (run_dir / "metrics.csv").open(newline="") as f:
        return [float(row[key]) for row in csv.DictReader(f) if row.get(key)]


@pytest.fixture(scope="module")
def single(tmp_path_factory) -> tuple[Path, dict]:
    run_dir = tmp_path_factory.mktemp("single")
    return run_dir, train(compose_cfg(ARGS, None), run_dir)


@pytest.mark.parametrize("strategy", ["ddp", "fsdp2"])
@pytest.mark.slow
def test_two_ranks_with_batch_b_match_one_process_with_batch_2b(tmp_path, single, strategy):
    single_dir, expected = single
    run_dir = tmp_path / strategy
    proc = run_cli([*ARGS, f"trainer={strategy}", "trainer.devices=2", "trainer.precision=32-true",
                    f"hydra.run.dir={run_dir}"])  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((run_dir / "results.json").read_text())
    for key in ("train/loss", "train/grad_norm"):
        curve, reference = _curve(run_dir, key), _curve(single_dir, key)
        assert len(curve) == len(reference) == 4
        torch.testing.assert_close(curve, reference, rtol=1e-4, atol=1e-5)
    assert results["train_loss"] == pytest.approx(expected["train_loss"], rel=1e-4)
    assert results["val_loss"] == pytest.approx(expected["val_loss"], rel=1e-4)
    assert results["tokens_seen"] == expected["tokens_seen"]  # global batches, not one rank's
    assert results["flops_per_batch"] * 2 == expected["flops_per_batch"]  # per rank: half the global batch
    # rank 0 gathered the full weights into one checkpoint that a single process can load
    state = torch.load(results["checkpoints"]["last"], map_location="cpu", weights_only=False)["state_dict"]
    assert state["model.embed.weight"].shape == (264, 64)


def test_batch_not_divisible_by_the_world_size_fails_before_training(tmp_path):
    with pytest.raises(ConfigError, match=r"data.batch_size: got 8; allowed: a multiple of the world size 3"):
        planned_jobs([*ARGS, "trainer=ddp", "trainer.devices=3", f"hydra.run.dir={tmp_path / 'run'}"], False)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("strategy", "zero9", r"trainer.strategy: got 'zero9'; allowed: auto, ddp, fsdp2, deepspeed_zero3"),
        ("devices", "0", r"trainer.devices: got 0 \(int\); allowed: a positive integer or auto"),
        ("devices", "'2'", r"trainer.devices: got '2' \(str\); allowed: a positive integer or auto"),
        ("num_nodes", "auto", r"trainer.num_nodes: got 'auto' \(str\); allowed: an integer >= 1"),
    ],
)
def test_bad_trainer_parallel_settings_name_field_value_and_allowed(field, value, match, tmp_path):
    with pytest.raises(ConfigError, match=match):
        planned_jobs([f"trainer.{field}={value}", f"hydra.run.dir={tmp_path / 'run'}"], multirun=False)


def test_strategy_configs_resolve_to_lightning_strategies():
    from lightning.pytorch.strategies import DDPStrategy, ModelParallelStrategy

    ddp = build_strategy(compose_cfg(["trainer=ddp", "trainer.devices=2"], None).trainer)
    assert isinstance(ddp["strategy"], DDPStrategy) and ddp["devices"] == 2
    fsdp = build_strategy(compose_cfg(["trainer=fsdp2", "trainer.num_nodes=2"], None).trainer)
    assert isinstance(fsdp["strategy"], ModelParallelStrategy) and fsdp["num_nodes"] == 2
    assert fsdp["strategy"]._data_parallel_size == 16 and fsdp["strategy"]._tensor_parallel_size == 1
    assert build_strategy({"devices": 1, "num_nodes": 1, "strategy": "fsdp"})["strategy"] == "fsdp"
    assert set(STRATEGIES) == {"auto", "ddp", "fsdp2", "deepspeed_zero3"}
    with pytest.raises(ConfigError, match=r"trainer.devices: got 'auto'; allowed: a positive integer with .*fsdp2"):
        planned_jobs(["trainer=fsdp2", "trainer.devices=auto"], multirun=False)


@pytest.mark.skipif(importlib.util.find_spec("deepspeed") is not None, reason="deepspeed is installed here")
def test_deepspeed_config_fails_clearly_without_the_package():
    with pytest.raises(ConfigError, match=r"trainer.strategy: got 'deepspeed_zero3', which needs the `deepspeed`"):
        planned_jobs(["trainer=deepspeed_zero3"], multirun=False)


def test_local_ranks_under_multirun_fail_before_any_rank_starts(monkeypatch):
    """Lightning would start rank 1 by re-running the command line: under --multirun, the whole sweep."""
    import lightning as L

    from workbench.training import strategy

    trainer = L.Trainer(accelerator="cpu", logger=False, **build_strategy({"devices": 2, "num_nodes": 1,
                                                                           "strategy": "ddp"}))  # fmt: skip
    strategy.check_launch(trainer)  # a single run: fine
    monkeypatch.setattr(strategy, "_in_multirun", lambda: True)
    with pytest.raises(ValueError, match=r"trainer.devices: got 2 under --multirun; allowed: 1 unless the cluster"):
        strategy.check_launch(trainer)
