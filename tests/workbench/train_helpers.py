"""Shared by the training tests: compose the Hydra config in-process, or run the CLI in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from workbench.training.config_store import register_presets
from workbench.training.overrides import CONF_DIR, VERSION_BASE

REPO = CONF_DIR.parent
# a few seconds of training: a 2-layer tiny-shaped model, short windows, no progress bar
FAST = ["model.n_layers=2", "model.d_model=64", "model.mlp_hidden=128", "data.seq_len=64", "data.batch_size=4",
        "data.val_tokens=512", "trainer.progress_bar=false", "trainer.log_every_n_steps=1",
        "trainer.throughput_window=2", "trainer.peak_flops=1e11", "optim.warmup_steps=2"]  # fmt: skip


def compose_cfg(overrides: list[str], cache_dir: Path | None) -> DictConfig:
    """cache_dir: where text sources cache tokens (None for the synthetic sources, which have no cache)."""
    register_presets()
    with initialize_config_dir(str(CONF_DIR), version_base=VERSION_BASE):
        return compose("train", overrides=[*overrides, *([f"data.cache_dir={cache_dir}"] if cache_dir else [])])


def run_cli(args: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline"}
    env.pop("WANDB_API_KEY", None)
    return subprocess.run(
        [sys.executable, "-m", "workbench.train", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
