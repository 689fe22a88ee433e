"""One multirun job: skip it when done, resume it when killed, and record a failure without stopping the grid.

Hydra's sweeper re-raises the first failed job and abandons the rest, so a job's exception is caught here,
written to results.json (status "failed", error) and reported; the next relaunch runs that arm again.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from workbench.training.results import RESULTS_FILE, write_json_atomic

LAST_CKPT = Path("checkpoints") / "last.ckpt"


def previous_results(run_dir: Path) -> dict[str, Any] | None:
    path = run_dir / RESULTS_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def threads_per_job(threads: int | None, launcher: DictConfig | None) -> int | None:
    """Explicit `threads`, else CPUs / joblib's n_jobs, else submitit's cpus_per_task; None: torch's default."""
    if threads is not None:
        return int(threads)
    launcher = launcher or {}
    if launcher.get("n_jobs"):
        n_jobs = int(launcher["n_jobs"])
        return 1 if n_jobs < 0 else max(1, (os.cpu_count() or 1) // n_jobs)
    return launcher.get("cpus_per_task") or None


def run_job(cfg: DictConfig, run_dir: str | Path) -> dict[str, Any]:
    """Run (or skip, or resume) one arm x seed; never raises an ordinary exception."""
    from workbench.training.run import run

    run_dir = Path(run_dir)
    prior = previous_results(run_dir)
    if prior and prior.get("status") == "completed":
        print(f"skip {run_dir.name}: completed (val loss {prior['val_loss']:.4f})")
        return prior
    killed = prior is None and (run_dir / LAST_CKPT).is_file()  # failed arms start over
    (run_dir / RESULTS_FILE).unlink(missing_ok=True)
    cfg = cfg.copy()
    OmegaConf.update(cfg, "resume", killed)
    if killed:
        print(f"resume {run_dir.name} from {run_dir / LAST_CKPT}")
    start = time.perf_counter()
    try:
        return run(cfg, run_dir)
    except Exception as e:  # OOM, NaN loss (FloatingPointError), a bad arm: the grid goes on
        results = previous_results(run_dir)  # run() writes it, unless the config was rejected before
        if results is None:
            results = {"run_dir": str(run_dir.resolve()), "seed": cfg.seed, "status": "failed",
                       "error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc(),
                       "torch_version": torch.__version__, "wall_time_s": time.perf_counter() - start}  # fmt: skip
            run_dir.mkdir(parents=True, exist_ok=True)
            write_json_atomic(run_dir / RESULTS_FILE, results)
        print(f"FAILED {run_dir.name}: {results['error']}")
        return results


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Parallel jobs that need one artefact (a teacher, a first stage, cached targets) wait for the one making it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def train_once(cfg: DictConfig, run_dir: Path, what: str) -> Path:
    """Train `cfg` into `run_dir` unless a run completed it there (a killed one resumes); `what` names it in errors."""
    with file_lock(run_dir):
        results = run_job(cfg, run_dir)
    if results.get("status") != "completed":
        raise RuntimeError(f"{what}: training {run_dir} failed: {results.get('error')}")
    return run_dir
