"""Entry point: `python -m workbench.train model=tiny data=stdlib trainer.max_steps=200 logger=none seed=3`.

Before Hydra creates any run dir, every job the command line runs is composed through the schema, planned
(dependencies such as a distillation teacher or a first stage are jobs of their own) and validated
(`training.compose.planned_jobs`); a user error is printed as one `error: ...` paragraph with exit status 2.
`dry_run=true` prices the plans and exits. Otherwise Hydra runs each job (`--multirun`: every arm x seed of a grid,
`+ablation=<name>`), which executes its plan (`training.jobs`): skip what completed, resume what was killed,
record a failure and go on. A run that fails on a NaN loss or an unreadable checkpoint exits 1 with its error
(also in results.json); anything else is a bug and keeps its traceback. Lightning is imported only to train.
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from workbench.training.compose import CONF_DIR, VERSION_BASE, planned_jobs, register_configs
from workbench.training.errors import ConfigError

register_configs()


@hydra.main(config_path=str(CONF_DIR), config_name="train", version_base=VERSION_BASE)
def _main(cfg: DictConfig) -> None:
    import torch

    from workbench.checkpoints import CorruptCheckpointError
    from workbench.training.grid import resolve_arm
    from workbench.training.jobs import DependencyError, execute, threads_per_job
    from workbench.training.module import NonFiniteLossError
    from workbench.training.plan import plan

    hc = HydraConfig.get()
    multirun = hc.mode == RunMode.MULTIRUN
    if threads := threads_per_job(cfg.threads, hc.launcher if multirun else None):
        torch.set_num_threads(threads)
    run_dir = hc.runtime.output_dir
    jobs = plan(resolve_arm(cfg), run_dir)  # validated by main() before Hydra started
    try:
        results = execute(jobs, isolate=multirun)
    except (CorruptCheckpointError, NonFiniteLossError, DependencyError) as e:  # recorded in results.json
        sys.exit(f"error: {e} (run dir: {run_dir})")
    if results["status"] == "completed":
        print(f"results: {run_dir}/results.json  (val loss {results['val_loss']:.4f}, val bpb {results['val_bpb']})")
    if results.get("wandb"):
        print(f"W&B run: {results['wandb']}  (offline runs: `wandb sync <that folder>`)")


CONFIG_DIR_FLAGS = ("--config-dir", "-cd")


def config_dirs(args: list[str]) -> tuple[list[str], list[str]]:
    """(the `hydra.searchpath` override that Hydra's `--config-dir DIR` / `-cd DIR` amounts to, if any; the other
    arguments): a grid in a folder of your own is planned, validated and priced like a shipped one."""
    dirs, rest, it = [], [], iter(args)
    for a in it:
        flag, eq, value = a.partition("=")
        if flag in CONFIG_DIR_FLAGS:
            dirs.append(value if eq else next(it, ""))
        else:
            rest.append(a)
    for d in dirs:
        if not Path(d).is_dir():
            raise ConfigError(f"--config-dir: got {d!r}, not a folder; allowed: an existing folder holding "
                              "<group>/<name>.yaml files, e.g. ablation/my_grid.yaml")  # fmt: skip
    paths = ",".join(f"'file://{Path(d).resolve()}'" for d in dirs)  # quoted: a path may hold spaces or commas
    return ([f"hydra.searchpath=[{paths}]"] if dirs else []), rest


def main() -> None:
    try:
        searchpath, args = config_dirs(sys.argv[1:])
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    flags = [a for a in args if a.startswith("-")]
    multirun = flags in (["--multirun"], ["-m"])
    if flags and not multirun:  # Hydra's own modes (--help, --cfg, ...)
        _main()
        return
    try:
        plans = planned_jobs(searchpath + [a for a in args if not a.startswith("-")], multirun)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    if plans and plans[0][-1].cfg.dry_run:
        from workbench.training.dry_run import dry_run

        sys.exit(dry_run(plans))
    _main()


if __name__ == "__main__":
    main()
