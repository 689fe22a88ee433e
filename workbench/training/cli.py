"""The training CLI: `python -m workbench.train model=tiny data=stdlib trainer.max_steps=200 logger=none seed=3`.

Hydra parses the command line (every Hydra flag works: `--multirun`, `--config-dir`, `--config-name`, `--cfg`,
`--info`, ...) and composes the config. A single run is checked by `RunCheck` (a Hydra callback, before Hydra makes
the run dir): its arm applied, its plan (dependencies such as a distillation teacher or a first stage are jobs of their
own) validated, or priced under `dry_run=true`. A multirun's jobs are the sweeper's (`training.sweeper`), which
validates, plans and runs them. A user error is one `error: ...` paragraph with exit status 2; a run that fails on a
NaN loss or an unreadable checkpoint exits 1 with its error (also in results.json); anything else is a bug and keeps
its traceback. Lightning is imported only to train.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from workbench.training.compose import CONF_DIR, VERSION_BASE, checked_compose, register_configs
from workbench.training.errors import ConfigError
from workbench.training.plan import Job
from workbench.training.sweep import fixed_overrides, parse, single_plan

register_configs()
PLANNED: dict[str, list[Job]] = {}  # a single run's plan, made by RunCheck before Hydra makes its run dir


def user_error(e: ConfigError) -> None:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)


class RunCheck(Callback):
    """Validate and plan a single run before Hydra creates its run dir; price it and exit under `dry_run=true`."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            jobs = single_plan(config)
        except ConfigError as e:
            user_error(e)
        if jobs[-1].cfg.dry_run:
            from workbench.training.dry_run import dry_run

            sys.exit(dry_run([jobs]))
        PLANNED[str(jobs[-1].run_dir.resolve())] = jobs


@hydra.main(config_path=str(CONF_DIR), config_name="train", version_base=VERSION_BASE)
def run_one(cfg: DictConfig) -> None:
    """A single run (a multirun's jobs run through the sweeper's `JobRunner`)."""
    import torch

    from workbench.checkpoints import CorruptCheckpointError
    from workbench.training.jobs import DependencyError, execute, threads_per_job
    from workbench.training.module import NonFiniteLossError

    run_dir = HydraConfig.get().runtime.output_dir
    if threads := threads_per_job(cfg.threads, None):
        torch.set_num_threads(threads)
    jobs = PLANNED.pop(str(Path(run_dir).resolve()))
    try:
        results = execute(jobs, isolate=False)
    except (CorruptCheckpointError, NonFiniteLossError, DependencyError) as e:  # recorded in results.json
        sys.exit(f"error: {e} (run dir: {run_dir})")
    if results["status"] == "completed":
        print(f"results: {run_dir}/results.json  (val loss {results['val_loss']:.4f}, val bpb {results['val_bpb']})")
    if results.get("wandb"):
        print(f"W&B run: {results['wandb']}  (offline runs: `wandb sync <that folder>`)")


def composition_flags() -> argparse.ArgumentParser:
    """The Hydra flags that decide what is composed (the rest of Hydra's flags pass through untouched)."""
    p = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    p.add_argument("--config-dir", "-cd")
    p.add_argument("--config-path", "-cp")
    p.add_argument("--config-name", "-cn", default="train")
    p.add_argument("--multirun", "-m", action="store_true")
    for flags in (("--cfg", "-c"), ("--package", "-p"), ("--experimental-rerun",)):  # flags with a value
        p.add_argument(*flags)
    for flags in (("--resolve",), ("--run", "-r"), ("--version",)):
        p.add_argument(*flags, action="store_true")
    for flag in ("--help", "-h", "--hydra-help", "--shell-completion", "-sc", "--info", "-i"):
        p.add_argument(flag, action="store_true", dest=flag.strip("-").replace("-", "_"))
    return p


def check_composition(argv: list[str]) -> None:
    """Compose what Hydra is about to compose (same config dir, search path, config name and fixed overrides), so
    that a bad key, value or option is one `error:` line, not Hydra's report; a multirun's sweeps are the sweeper's."""
    flags, overrides = composition_flags().parse_known_args(argv)
    if flags.experimental_rerun or any(
        vars(flags).get(k) for k in ("help", "h", "hydra_help", "shell_completion", "sc", "info", "i", "version")
    ):
        return
    overrides = [a for a in overrides if not a.startswith("-")]
    parsed = parse(overrides)
    if not flags.multirun and (sweeps := [o for o in parsed if o.is_sweep_override()]):
        raise ConfigError(f"{sweeps[0].key_or_group}: got the sweep {sweeps[0].input_line.partition('=')[2]!r}; "
                          "allowed: one value, or the same sweep under --multirun")  # fmt: skip
    fixed = fixed_overrides(parsed)
    primary = Path(flags.config_path).absolute() if flags.config_path else CONF_DIR
    if flags.config_dir:  # Hydra searches it after the primary dir; a config named there is found there
        extra = Path(flags.config_dir).expanduser().absolute()
        if not extra.is_dir():
            raise ConfigError(f"--config-dir: got '{flags.config_dir}', not a folder; allowed: a folder of configs "
                              "(your grids in <folder>/ablation/<name>.yaml)")  # fmt: skip
        if (extra / f"{flags.config_name}.yaml").is_file() and not (primary / f"{flags.config_name}.yaml").is_file():
            primary, extra = extra, primary
        fixed.append(f"hydra.searchpath=[file://{extra}]")
    checked_compose(fixed, config_dir=primary, config_name=flags.config_name)


def main() -> None:
    try:
        check_composition(sys.argv[1:])
    except ConfigError as e:
        user_error(e)
    run_one()


if __name__ == "__main__":
    main()
