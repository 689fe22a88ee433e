"""Loggers: a CSV of every metric always (`metrics.csv` in the run dir), plus W&B unless `logger=none`/`csv`."""

from __future__ import annotations

import csv
import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import CSVLogger, Logger, WandbLogger

KINDS = ("wandb", "csv", "none")


def csv_logger(run_dir: Path, resume_step: int | None) -> CSVLogger:
    """Lightning deletes an existing metrics.csv; on resume, put back the rows logged before the checkpoint."""
    path = run_dir / "metrics.csv"
    kept: list[dict[str, str]] = []
    header: list[str] = []
    if resume_step is not None and path.exists():
        with path.open(newline="") as f:
            reader = csv.DictReader(f)
            header = list(reader.fieldnames or [])
            # a row's step counts the batches stepped before it: rows at resume_step and later come again
            kept = [row for row in reader if row.get("step") and int(float(row["step"])) < resume_step]
    logger = CSVLogger(save_dir=run_dir, name="", version="")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Experiment logs directory")
        writer = logger.experiment  # created now: this is where the old file is removed
    if kept:
        with path.open("w", newline="") as f:
            out = csv.DictWriter(f, fieldnames=header)
            out.writeheader()
            out.writerows(kept)
        writer.metrics_keys = header
    return logger


def _previous_wandb_id(run_dir: Path) -> str | None:
    latest = run_dir / "wandb" / "latest-run"
    return latest.resolve().name.rsplit("-", 1)[-1] if latest.exists() else None


def build_loggers(
    cfg: Mapping[str, Any], run_dir: Path, config: dict[str, Any], resume_step: int | None
) -> list[Logger]:
    if cfg["kind"] not in KINDS:
        raise ValueError(f"logger.kind: got {cfg['kind']!r}; allowed: {', '.join(KINDS)}")
    loggers: list[Logger] = [csv_logger(run_dir, resume_step)]
    if cfg["kind"] == "wandb":
        finish_wandb()  # a grid worker's previous job, if it ended without: Lightning would log into its run
        run_id = _previous_wandb_id(run_dir) if resume_step is not None else None
        wandb = WandbLogger(
            project=cfg["project"], group=cfg["group"], job_type=cfg["job_type"], name=cfg["name"] or run_dir.name,
            tags=list(cfg["tags"]), save_dir=str(run_dir), offline=not os.environ.get("WANDB_API_KEY"),
            config=config, id=run_id, resume="allow" if run_id else None,
        )  # fmt: skip
        loggers.append(wandb)
    return loggers


def finish_wandb(exit_code: int = 0) -> None:
    """End this process's W&B run, if any: Lightning's WandbLogger never does, so the run's log stays open and a
    later run in the same process (a grid worker's next job) would log into it."""
    import wandb

    if wandb.run is not None:
        wandb.finish(exit_code=exit_code)


def wandb_location(loggers: list[Logger]) -> str | None:
    """The offline run folder (sync it with `wandb sync <folder>`) or the online URL."""
    for lg in loggers:
        if isinstance(lg, WandbLogger):
            run = lg.experiment
            return run.url or str(Path(run.dir).parent)
    return None
