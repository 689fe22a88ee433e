"""Compose the training config in-process (tests, benchmarks, notebooks), as `python -m workbench.train` would."""

from __future__ import annotations

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from workbench.training.config_store import register_presets
from workbench.training.overrides import CONF_DIR, VERSION_BASE


def compose_train(overrides: list[str]) -> DictConfig:
    """The composed `train` config (no `hydra` node) for these command-line overrides."""
    register_presets()
    with initialize_config_dir(str(CONF_DIR), version_base=VERSION_BASE):
        return compose("train", overrides=overrides)
