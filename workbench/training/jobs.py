"""Executing a plan (`training.plan`): dependencies first, each under a lock so parallel jobs that share one wait for
the job making it; a completed job is skipped, a killed one resumed, a failed one retried.

Hydra's sweeper re-raises the first failed job and abandons the rest, so in a grid (`isolate=True`) a job's
exception is caught, written to results.json (status "failed", error) and reported; a failed dependency fails its
dependents with an error that names it. `train` is the way in from Python: validate every job, then execute.
"""

from __future__ import annotations

import json
import os
import time
import traceback
from pathlib import Path
from typing import Any

import torch
from filelock import FileLock
from omegaconf import DictConfig

from workbench.checkpoints import LAST
from workbench.training.compose import validated_plan
from workbench.training.grid import resolve_arm
from workbench.training.plan import Job
from workbench.training.results import RESULTS_FILE, write_json_atomic
from workbench.training.run import run


class DependencyError(RuntimeError):
    """A job this run needs (its teacher, its first stage) did not complete."""


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


def train(cfg: DictConfig, run_dir: str | Path) -> dict[str, Any]:
    """Plan `cfg` (its arm applied), validate every job before any run dir exists, then execute; raises on failure."""
    return execute(validated_plan(resolve_arm(cfg), Path(run_dir)), isolate=False)


def execute(jobs: list[Job], isolate: bool) -> dict[str, Any]:
    """Run the plan's dependencies (skipped when done), then its last job; `isolate`: never raise, record failures."""
    *deps, main = jobs
    for dep in deps:
        dep.run_dir.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(dep.run_dir) + ".lock"):
            results = run_job(dep)
        if results.get("status") != "completed":
            error = DependencyError(f"{dep.what} {dep.run_dir} failed: {results.get('error')}")
            if not isolate:
                raise error
            return _record_failure(main, error, time.perf_counter())
    if isolate:
        return run_job(main)
    return run(main.cfg, main.run_dir, main.inputs)


def run_job(job: Job) -> dict[str, Any]:
    """Run (or skip, or resume) one job; never raises an ordinary exception."""
    prior = previous_results(job.run_dir)
    if prior and prior.get("status") == "completed":
        print(f"skip {job.run_dir.name}: completed (val loss {prior['val_loss']:.4f})")
        return prior
    killed = prior is None and (job.run_dir / LAST).is_file()  # failed jobs start over
    (job.run_dir / RESULTS_FILE).unlink(missing_ok=True)
    cfg = job.cfg.copy()
    cfg.resume = killed
    if killed:
        print(f"resume {job.run_dir.name} from {job.run_dir / LAST}")
    start = time.perf_counter()
    try:
        return run(cfg, job.run_dir, job.inputs)
    except Exception as e:  # OOM, NaN loss, an unreadable checkpoint: the grid goes on
        return _record_failure(job, e, start)


def _record_failure(job: Job, e: Exception, start: float) -> dict[str, Any]:
    results = previous_results(job.run_dir)  # run() writes it once the run dir exists
    if results is None:
        results = {"run_dir": str(job.run_dir.resolve()), "seed": job.cfg.seed, "status": "failed",
                   "error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc(),
                   "torch_version": torch.__version__, "wall_time_s": time.perf_counter() - start}  # fmt: skip
        job.run_dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(job.run_dir / RESULTS_FILE, results)
    print(f"FAILED {job.run_dir.name}: {results['error']}")
    return results
