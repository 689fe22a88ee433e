"""Shared by the training tests: compose the Hydra config in-process, or run the CLI in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from omegaconf import DictConfig

from workbench.training.compose import compose_train

REPO = Path(__file__).resolve().parents[2]
# a few seconds of training: a 2-layer tiny-shaped model, short windows, no progress bar; fp32 so that numbers do
# not depend on whether this CPU computes bf16 natively (trainer.precision auto)
FAST = ["model.n_layers=2", "model.d_model=64", "model.mlp_hidden=128", "data.seq_len=64", "data.batch_size=4",
        "data.val_tokens=512", "trainer.progress_bar=false", "trainer.log_every_n_steps=1",
        "trainer.throughput_window=2", "trainer.peak_flops=1e11", "optim.warmup_steps=2",
        "trainer.precision=32-true"]  # fmt: skip


def compose_cfg(overrides: list[str], cache_dir: Path | None) -> DictConfig:
    """cache_dir: where text sources cache tokens (None for the synthetic sources, which have no cache)."""
    return compose_train([*overrides, *([f"data.cache_dir={cache_dir}"] if cache_dir else [])])


def run_cli(args: list[str], cwd: Path = REPO) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline"}
    env.pop("WANDB_API_KEY", None)
    return subprocess.run(
        [sys.executable, "-m", "workbench.train", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )
