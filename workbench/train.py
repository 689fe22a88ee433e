"""Entry point: `python -m workbench.train model=tiny data=stdlib trainer.max_steps=200 logger=none seed=3`.

Composes `conf/train.yaml` with Hydra, then hands the resolved config and the run dir to `training.run.run`.
"""

from __future__ import annotations

import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from workbench.training.config_store import register_presets
from workbench.training.overrides import CONF_DIR, VERSION_BASE, UnknownKeyError, check_overrides

register_presets()


@hydra.main(config_path=str(CONF_DIR), config_name="train", version_base=VERSION_BASE)
def _main(cfg: DictConfig) -> None:
    from workbench.training.run import run  # imported here so a bad override fails before Lightning loads

    run_dir = HydraConfig.get().runtime.output_dir
    results = run(cfg, run_dir)
    print(f"results: {run_dir}/results.json  (val loss {results['val_loss']:.4f}, val bpb {results['val_bpb']})")
    if results["wandb"]:
        print(f"W&B run: {results['wandb']}  (offline runs: `wandb sync <that folder>`)")


def main() -> None:
    try:
        check_overrides([a for a in sys.argv[1:] if not a.startswith("-")])
    except UnknownKeyError as e:
        sys.exit(f"error: {e}")
    _main()


if __name__ == "__main__":
    main()
