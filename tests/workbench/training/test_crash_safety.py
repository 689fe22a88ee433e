"""Crash safety: a run killed by SIGKILL resumes to an uninterrupted run's result; checkpoints and results.json are
replaced atomically and a corrupt checkpoint is never loaded; a NaN/inf loss fails the run with its step."""

import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import workbench.train
from analysis.report import report
from tests.workbench.train_helpers import FAST, REPO, compose_cfg
from workbench.checkpoints import CorruptCheckpointError
from workbench.training.checkpoint_io import AtomicCheckpointIO, checkpoint_step, previous_version
from workbench.training.jobs import train
from workbench.training.results import write_json_atomic
from workbench.training.run import resume_checkpoint

METRICS = ("train_loss", "val_loss", "val_bpb")


def _same_result(a: dict, b: dict) -> None:
    assert a["status"] == b["status"] == "completed" and a["steps"] == b["steps"]
    for key in METRICS:
        assert a[key] == pytest.approx(b[key], abs=1e-6), key


def _train_steps(run_dir: Path) -> list[int]:
    with (run_dir / "metrics.csv").open() as f:
        return [int(r["step"]) for r in csv.DictReader(f) if r["train/loss"]]


@pytest.mark.slow
def test_sigkill_at_a_random_step_then_resume_equals_an_uninterrupted_run(tmp_path, one_thread):
    steps = 16
    run_dir, cache = tmp_path / "killed", tmp_path / "cache"
    common = ["logger=none", f"trainer.max_steps={steps}", "trainer.val_check_interval=2", "seed=5", *FAST]
    args = [*common, f"hydra.run.dir={run_dir}", f"data.cache_dir={cache}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline"}
    cmd = [sys.executable, "-m", "workbench.train", *args]
    target = int(np.random.default_rng(10).choice([2, 4, 6, 8]))  # killed once a checkpoint of this step exists
    last = run_dir / "checkpoints" / "last.ckpt"
    with (tmp_path / "first.log").open("w") as log:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=log)
        deadline = time.monotonic() + 240
        while proc.poll() is None and time.monotonic() < deadline:
            if last.is_file() and checkpoint_step(last) >= target:  # atomic: never a half-written file here
                break
            time.sleep(0.02)
        assert proc.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    killed_at = checkpoint_step(last)
    assert target <= killed_at < steps and not (run_dir / "results.json").exists()

    resumed = subprocess.run([*cmd, "resume=true"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    after_kill = json.loads((run_dir / "results.json").read_text())
    reference = train(compose_cfg(common, cache), tmp_path / "uninterrupted")
    _same_result(after_kill, reference)
    assert _train_steps(run_dir) == list(range(steps))  # the rows logged before the kill kept, none twice


def test_corrupt_last_checkpoint_falls_back_to_the_previous_one(tmp_path, one_thread):
    common = ["logger=none", "trainer.val_check_interval=2", "optim.total_steps=6", *FAST]
    cache, run_dir = tmp_path / "cache", tmp_path / "split"
    full = train(compose_cfg([*common, "trainer.max_steps=6"], cache), tmp_path / "full")
    train(compose_cfg([*common, "trainer.max_steps=4"], cache), run_dir)
    last = run_dir / "checkpoints" / "last.ckpt"
    previous_step = checkpoint_step(previous_version(last))
    assert checkpoint_step(last) == 4 and previous_step in (2, 4)
    data = last.read_bytes()
    last.write_bytes(data[: len(data) // 2])  # a truncated copy
    with pytest.warns(RuntimeWarning, match=rf"last\.ckpt is unreadable.*falling back to .*last\.prev\.ckpt \(step "
                                            rf"{previous_step}\)"):  # fmt: skip
        resumed = train(compose_cfg([*common, "trainer.max_steps=6", "resume=true"], cache), run_dir)
    _same_result(resumed, full)
    assert checkpoint_step(last) == 6


def test_no_sound_checkpoint_is_an_error_naming_the_files(tmp_path):
    ckpts = tmp_path / "checkpoints"
    ckpts.mkdir()
    (ckpts / "last.ckpt").write_bytes(b"garbage")
    (ckpts / "last.prev.ckpt").write_bytes(bytes(64))
    with pytest.raises(CorruptCheckpointError, match=r"last\.ckpt is unreadable.*last\.prev\.ckpt is unreadable"):
        resume_checkpoint(True, tmp_path)
    with pytest.raises(CorruptCheckpointError, match=r"checkpoints/last\.ckpt is unreadable"):
        resume_checkpoint(str(ckpts / "last.ckpt"), tmp_path)  # named explicitly: no fallback
    torch.save({"weights": 1}, ckpts / "other.ckpt")
    with pytest.raises(CorruptCheckpointError, match="not a Lightning checkpoint"):
        checkpoint_step(ckpts / "other.ckpt")
    assert resume_checkpoint(True, tmp_path / "fresh") == (None, None)  # nothing there: a fresh start


def test_a_crash_while_saving_leaves_the_old_checkpoint_whole(tmp_path, monkeypatch):
    io, path = AtomicCheckpointIO(), tmp_path / "last.ckpt"
    io.save_checkpoint({"global_step": 1, "state_dict": {}}, path)
    io.save_checkpoint({"global_step": 2, "state_dict": {}}, path)
    assert checkpoint_step(path) == 2 and checkpoint_step(previous_version(path)) == 1

    def killed_mid_write(obj, f):
        Path(f).write_bytes(b"PK\x03\x04 half a zip")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", killed_mid_write)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"global_step": 3, "state_dict": {}}, path)
    assert checkpoint_step(path) == 2 and checkpoint_step(previous_version(path)) == 1
    assert resume_checkpoint(str(path), tmp_path) == (str(path), 2)


def test_a_crash_while_writing_results_leaves_the_old_file_whole(tmp_path, monkeypatch):
    path = tmp_path / "results.json"
    write_json_atomic(path, {"status": "completed", "val_loss": 1.5})

    def killed(src, dst):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        write_json_atomic(path, {"status": "failed", "error": "x" * 10_000})
    assert json.loads(path.read_text()) == {"status": "completed", "val_loss": 1.5}


def test_nan_loss_fails_the_run_with_its_step_and_the_grid_report_lists_it(tmp_path, monkeypatch, capsys, one_thread):
    grid, cache = tmp_path / "grid", tmp_path / "cache"
    arms = [
        "ablation.name=g",
        "ablation.baseline=base",
        "+ablation.arms.base={optim.lr:3.0e-3}",
        "+ablation.arms.diverge={optim.lr:1.0e30}",
    ]
    common = ["logger=none", "trainer.max_steps=6", "trainer.val_check_interval=2", *FAST, *arms]
    train(compose_cfg([*common, "ablation.arm=base"], cache), grid / "base")  # train() applies the arm
    argv = [*common, "ablation.arm=diverge", f"hydra.run.dir={grid / 'diverge'}", f"data.cache_dir={cache}"]
    monkeypatch.setattr(sys, "argv", ["workbench.train", *argv])
    with pytest.raises(SystemExit) as e:
        workbench.train.main()
    message = str(e.value.code)  # sys.exit(<message>): exit status 1
    assert message.startswith("error: train loss is") and "Traceback" not in capsys.readouterr().err
    results = json.loads((grid / "diverge" / "results.json").read_text())
    step = int(re.search(r"at step (\d+)", results["error"]).group(1))
    assert results["status"] == "failed" and results["failed_step"] == step >= 1
    assert re.match(r"NonFiniteLossError: train loss is (nan|inf|-inf) at step", results["error"])
    assert _train_steps(grid / "diverge") == list(range(step))  # finite losses logged up to the failing step

    report(grid, tmp_path / "report")
    summary = (tmp_path / "report" / "summary.md").read_text()
    failed_table = summary.split("## Failed runs")[1]
    assert "diverge" in failed_table and "failed_step" in failed_table and "NonFiniteLossError" in failed_table
    header, row = (
        [cell.strip() for cell in line.split("|")]
        for line in failed_table.splitlines()
        if "failed_step" in line or "diverge" in line
    )
    assert float(row[header.index("failed_step")]) == step
