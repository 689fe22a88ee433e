"""`hydra/sweeper=workbench` (the default of every multirun): the sweeper owns the job list.

It expands the grid once (`training.sweep`: arms x seeds x rates from the typed `ablation` config, crossed with the
command line's sweeps), validates and plans every job before any run dir exists, and hands the jobs' override lists
to whichever launcher is configured (basic, joblib, submitit) in batches, as Hydra's Optuna and Ax sweepers do. Each
job runs the plan it was handed (`JobRunner`), in the run dir the sweeper computed (`hydra.sweep.subdir`). After a
round, `training.rounds` reads the results and may add another: rates beyond an arm's edge, then seeds until each
arm is decided. `dry_run=true` prices the first round and the worst case and launches nothing. A relaunch replays
the rounds from the results on disk: finished runs are skipped, killed ones resume, so it continues where it was.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.plugins import Plugins
from hydra.errors import HydraException
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, flag_override
from omegaconf.errors import OmegaConfBaseException

from workbench.training import rounds
from workbench.training.errors import ConfigError, from_composition
from workbench.training.plan import Job
from workbench.training.sweep import (
    ARM,
    SweepJob,
    SweepJobs,
    fixed_overrides,
    grid_axes,
    initial_combos,
    parse,
    sweep_dir,
)

MAX_ROUNDS = 100  # a guard: bracketing stops at the bounds and seeds at max_seeds long before


class JobRunner:
    """The task each launched job runs: the plan the sweeper made for its run dir (pickled to joblib's and
    submitit's workers with the plans)."""

    def __init__(self, plans: dict[str, list[Job]]) -> None:
        self.plans = plans

    def __call__(self, cfg: DictConfig) -> dict[str, Any]:
        import torch

        from workbench.training.jobs import execute, threads_per_job

        hc = HydraConfig.get()
        if threads := threads_per_job(cfg.threads, hc.launcher):
            torch.set_num_threads(threads)
        jobs = self.plans[str(Path(hc.runtime.output_dir).resolve())]
        return execute(jobs, isolate=True)


def quoted(value: str) -> str:
    """A value as a Hydra override's quoted string (paths may hold characters its grammar reserves)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


class GridSweeper(Sweeper):
    def __init__(self) -> None:
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.hydra_context = config, hydra_context

    def sweep(self, arguments: list[str]) -> Any:
        try:
            return self._sweep(arguments)
        except ConfigError as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)

    def _compose(self, overrides: list[str]) -> DictConfig:
        try:
            return self.hydra_context.config_loader.load_sweep_config(self.config, overrides)
        except (HydraException, OmegaConfBaseException) as e:
            raise from_composition(e) from e

    def _sweep(self, arguments: list[str]) -> list[dict[str, Any]]:
        parsed = parse(arguments)
        master = self.config
        directory = sweep_dir(master).absolute()
        jobs = SweepJobs(self._compose, fixed_overrides(parsed), directory, str(master.hydra.launcher._target_))
        jobs.add(initial_combos(master, parsed))
        axes = grid_axes(master)
        swept_elsewhere = [o.get_key_element() for o in parsed if o.is_sweep_override()
                           and o.get_key_element() not in axes]  # fmt: skip
        lrs = [float(x) for x in master.ablation.lrs]
        grid = jobs.jobs[0].run.cfg.ablation  # quick mode's overrides applied
        settings = rounds.Settings.of(grid, list(axes.get("seed", [])), lrs)
        with_rounds = bool(axes) and not swept_elsewhere
        if master.dry_run:
            from workbench.training.dry_run import dry_run

            worst = rounds.worst_case_jobs(len(axes[ARM]), settings.first_seeds, lrs, settings) if with_rounds else None
            sys.exit(dry_run([j.plan for j in jobs.jobs], worst))
        with flag_override(master, ["readonly", "struct"], [False, False]):
            master.hydra.sweep.dir = str(directory)
        launched: set[str] = set()
        history = [{"round": 1, "why": "the grid as written", "jobs": len(jobs.jobs)}]
        looks, progress = 0, Progress(jobs, batch_size(master.hydra.launcher))
        returns: list[dict[str, Any]] = []
        while True:
            returns += self._launch(jobs, launched, progress, history[-1])
            if not with_rounds or len(history) >= MAX_ROUNDS:
                break
            runs = rounds.runs_frame(jobs.jobs)
            combos, why = rounds.bracketing(runs, settings) if settings.bracket else ([], "")
            if not combos:
                looks += 1
                combos, why = rounds.more_seeds(runs, settings, looks)
            rounds.write_state(directory, settings, max(looks, 1), history)
            new = jobs.add(combos)
            if not new:
                break
            history.append({"round": len(history) + 1, "why": why, "jobs": len(new)})
        rounds.write_state(directory, settings, max(looks, 1), history)
        return returns

    def _launch(self, jobs: SweepJobs, launched: set[str], progress: Progress, this_round: dict[str, Any]
                ) -> list[dict[str, Any]]:  # fmt: skip
        """Launch every job not yet completed and not launched before in this sweep, in batches of the launcher's
        parallelism, a progress line before each."""
        todo = []
        for job in jobs.jobs:
            key = str(job.run.run_dir)
            prior = rounds.read_results(job.run.run_dir)
            if key in launched:
                continue
            if prior and prior.get("status") == "completed":
                if key not in progress.skipped:
                    progress.skipped.add(key)
                    print(f"skip {job.run.run_dir.name}: completed (val loss {prior.get('val_loss')})")
                continue
            launched.add(key)
            todo.append(job)
        plans = {str(j.run.run_dir.resolve()): j.plan for j in jobs.jobs}
        launcher = Plugins.instance().instantiate_launcher(
            hydra_context=self.hydra_context, task_function=JobRunner(plans), config=self.config
        )
        size = batch_size(self.config.hydra.launcher)
        out = []
        for start in range(0, len(todo), size):
            batch = todo[start : start + size]
            progress.show(this_round, running=len(batch))
            overrides = [launch_overrides(j, jobs.directory) for j in batch]
            returns = launcher.launch(overrides, initial_job_idx=progress.launched)
            progress.launched += len(batch)
            out += [r.return_value for r in returns]
        progress.show(this_round, running=0)
        return out


def launch_overrides(job: SweepJob, directory: Path) -> list[str]:
    """What the launcher composes the job from: its overrides, and its run dir, computed once, as sweep dir + id."""
    return [*job.overrides, f"hydra.sweep.dir={quoted(str(directory))}",
            f"hydra.sweep.subdir={quoted(job.run.run_dir.name)}"]  # fmt: skip


def batch_size(launcher: DictConfig) -> int:
    """Jobs handed to the launcher at once: its parallelism (joblib's n_jobs, submitit's array), else one."""
    for key in ("n_jobs", "array_parallelism"):
        value = launcher.get(key)
        if isinstance(value, int) and value > 0:
            return value
    return 1


class Progress:
    """One line per batch: jobs done of jobs planned, the round and why it was added, an ETA from the dry run's
    pricing of the jobs left (divided by the launcher's parallelism)."""

    def __init__(self, jobs: SweepJobs, parallel: int) -> None:
        self.jobs, self.parallel, self.launched = jobs, parallel, 0
        self.seconds: dict[Path, float] = {}
        self.skipped: set[str] = set()  # completed before this sweep started: said once

    def show(self, this_round: dict[str, Any], running: int) -> None:
        from rich.console import Console
        from rich.progress_bar import ProgressBar
        from rich.table import Table

        from workbench.training.dry_run import estimated_seconds

        left = [j for j in self.jobs.jobs if not ((r := rounds.read_results(j.run.run_dir)) and r.get("status"))]
        for job in left:
            if job.run.run_dir not in self.seconds:
                self.seconds[job.run.run_dir] = estimated_seconds(job.run)
        total, done = len(self.jobs.jobs), len(self.jobs.jobs) - len(left)
        eta = f"{sum(self.seconds[j.run.run_dir] for j in left) / self.parallel / 60:.1f} min"
        line = Table.grid(padding=1)
        line.add_row(ProgressBar(total=total, completed=done, width=30),
                     f"{done}/{total} jobs, {running} running | round {this_round['round']}: {this_round['why']} | "
                     f"ETA {eta}")  # fmt: skip
        Console(stderr=True).print(line)
