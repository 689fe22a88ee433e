"""Presets and ablation grids registered in Hydra's ConfigStore.

`conf/model/<name>.yaml` reuses `workbench/presets.py` verbatim, and every `ablations/<name>.yaml` becomes the
option `<name>` of the group `ablation` (package `_global_`), so `+ablation=<name>` selects a grid.
"""

from __future__ import annotations

from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

from workbench.presets import PRESETS
from workbench.training.grid import ABLATIONS_DIR, register_resolvers

PRESET_GROUP = "preset"
ABLATION_GROUP = "ablation"


def register_presets() -> None:
    cs = ConfigStore.instance()
    for name, cfg in PRESETS.items():
        cs.store(group=PRESET_GROUP, name=name, node=cfg.to_dict())
    register_ablations()


def register_ablations() -> None:
    register_resolvers()
    cs = ConfigStore.instance()
    for path in sorted(ABLATIONS_DIR.glob("*.yaml")):
        cs.store(group=ABLATION_GROUP, name=path.stem, node=OmegaConf.load(path), package="_global_")
