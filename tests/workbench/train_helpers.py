"""Shared by the training tests: compose the Hydra config in-process, or run the CLI in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from omegaconf import DictConfig

from workbench.config import ModelConfig
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


def assert_user_error(text: str, expected: list[str]) -> None:
    """The bad-input contract: one `error: ...` line holding every string of `expected`, no traceback."""
    assert "Traceback" not in text, text
    lines = [line for line in text.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), text
    for s in expected:
        assert s in lines[0], (s, lines[0])


def tree(root: Path) -> set[Path]:
    """Every path under `root`: compared before and after a command that must create nothing."""
    return set(root.rglob("*"))


def write_checkpoint(path: Path, cfg: ModelConfig, **extra: object) -> Path:
    """A Lightning-shaped checkpoint of a freshly built `cfg` model (as `LMModule` saves one), `extra` keys added."""
    import torch

    from workbench.model import build_model

    state = {f"model.{k}": v for k, v in build_model(cfg).state_dict().items()}
    ckpt = {"state_dict": state, "model_config": cfg.to_dict(), "optimizer_states": [], "loops": {}, "epoch": 0,
            "global_step": 0, **extra}  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(ckpt, path)
    return path


def cli_error(argv: list[str], root: Path, monkeypatch, capsys) -> str:
    """`python -m workbench.train <argv>` in-process, for a command that must fail: exit status 2, nothing on
    stdout, nothing created under `root` (no run dir, no sweep dir, no cache); returns stderr."""
    import pytest

    import workbench.train

    before = tree(root)
    monkeypatch.setattr(sys, "argv", ["workbench.train", *argv])
    accepted = f"accepted, would train: {argv}"
    monkeypatch.setattr("workbench.training.jobs.execute", lambda *a, **k: pytest.fail(accepted))
    with pytest.raises(SystemExit) as e:
        workbench.train.main()
    out = capsys.readouterr()
    assert e.value.code == 2, out.err
    assert out.out == ""
    assert tree(root) == before, tree(root) - before
    return out.err
