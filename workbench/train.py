"""Entry point: `python -m workbench.train model=tiny data=stdlib trainer.max_steps=200 logger=none seed=3`.

Composes `conf/train.yaml` with Hydra, then hands the resolved config and the run dir to `training.run.run`.
A grid: `python -m workbench.train --multirun +ablation=<name> [ablation.quick=true] [dry_run=true]`; its jobs
go through `training.grid_job.run_job`, which skips, resumes, and isolates failures.
User errors (a bad value, key, preset, path; `training.validate`) are caught before Hydra creates a run dir and
printed as one `error: ...` paragraph with exit status 2; a run that fails on a NaN loss or an unreadable
checkpoint exits 1 with its error (also in results.json); anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import sys

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.types import RunMode
from omegaconf import DictConfig

from workbench.training.checkpoint_io import CorruptCheckpointError
from workbench.training.config_store import register_presets
from workbench.training.grid import resolve_arm
from workbench.training.grid_job import run_job, threads_per_job
from workbench.training.module import NonFiniteLossError
from workbench.training.overrides import CONF_DIR, VERSION_BASE, UnknownKeyError
from workbench.training.run import run
from workbench.training.validate import ConfigError, validate_command_line

register_presets()


@hydra.main(config_path=str(CONF_DIR), config_name="train", version_base=VERSION_BASE)
def _main(cfg: DictConfig) -> None:
    hc = HydraConfig.get()
    if threads := threads_per_job(cfg.threads, hc.launcher if hc.mode == RunMode.MULTIRUN else None):
        torch.set_num_threads(threads)
    run_dir = hc.runtime.output_dir
    cfg = resolve_arm(cfg)
    try:
        results = run_job(cfg, run_dir) if hc.mode == RunMode.MULTIRUN else run(cfg, run_dir)
    except (ConfigError, CorruptCheckpointError, NonFiniteLossError) as e:  # recorded in results.json by run()
        sys.exit(f"error: {e} (run dir: {run_dir})")
    if results["status"] == "completed":
        print(f"results: {run_dir}/results.json  (val loss {results['val_loss']:.4f}, val bpb {results['val_bpb']})")
    if results.get("wandb"):
        print(f"W&B run: {results['wandb']}  (offline runs: `wandb sync <that folder>`)")


def main() -> None:
    args = sys.argv[1:]
    overrides = [a for a in args if not a.startswith("-")]
    try:
        validate_command_line(overrides, [a for a in args if a.startswith("-")])
    except (ConfigError, UnknownKeyError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    if any(
        o.key_or_group == "dry_run" and o.value() is True for o in OverridesParser.create().parse_overrides(overrides)
    ):
        from workbench.training.dry_run import dry_run

        sys.exit(dry_run(overrides))
    _main()


if __name__ == "__main__":
    main()
