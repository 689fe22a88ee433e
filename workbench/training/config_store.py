"""Presets registered in Hydra's ConfigStore, so `conf/model/<name>.yaml` reuses `workbench/presets.py` verbatim."""

from __future__ import annotations

from hydra.core.config_store import ConfigStore

from workbench.presets import PRESETS

PRESET_GROUP = "preset"


def register_presets() -> None:
    cs = ConfigStore.instance()
    for name, cfg in PRESETS.items():
        cs.store(group=PRESET_GROUP, name=name, node=cfg.to_dict())
