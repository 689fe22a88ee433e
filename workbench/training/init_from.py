"""`init_from`: start a run from trained weights (not optimiser state or step), e.g. to continue at a longer context.

The value is a run dir or `.ckpt` file, or a map of dotted overrides that names a first stage of this very config
(`{model.max_seq_len: 256, trainer.max_steps: 300}`): that stage is trained first, once, in
`<parent of the run dir>/stages/<id>` (id: hash of the stage's config, as for grid runs), so the arms of a grid
that share a stage share its run. A file lock makes parallel jobs wait for the one training it.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError

from workbench.model import Transformer
from workbench.training.checkpoints import checkpoint_file, load_model_from_checkpoint

STAGES = "stages"


def stage_config(cfg: DictConfig) -> DictConfig:
    """The first-stage config `init_from: {dotted.key: value}` names: this config with the overrides applied."""
    overrides = OmegaConf.to_container(cfg.init_from, resolve=True)  # against this config, before it changes
    stage = OmegaConf.create(OmegaConf.to_container(cfg, resolve=False))
    OmegaConf.set_struct(stage, True)
    for key, value in overrides.items():
        try:
            OmegaConf.update(stage, key, value, merge=False)
        except (ConfigAttributeError, ConfigKeyError) as e:
            raise ValueError(f"init_from: unknown config key {key!r} in the first-stage overrides") from e
    OmegaConf.update(stage, "init_from", None)
    OmegaConf.update(stage, "resume", False)
    OmegaConf.update(stage, "ablation.arm", None)  # not an arm of the grid: reports skip it
    if OmegaConf.select(stage, "logger.job_type") is not None:  # W&B: not one of the arm's runs either
        OmegaConf.update(stage, "logger.job_type", "first_stage")
    return stage


def init_checkpoint(cfg: DictConfig, run_dir: Path) -> Path | None:
    """The checkpoint `cfg.init_from` names, training its first stage now when it is a map and not yet done."""
    init = cfg.get("init_from")
    if init is None:
        return None
    if isinstance(init, str):
        return checkpoint_file(init)
    if not isinstance(init, DictConfig) or not init:
        raise ValueError(f"init_from: got {init!r}; allowed: null, a run dir or .ckpt path, or a map of overrides")
    from workbench.training.grid import run_id
    from workbench.training.grid_job import train_once

    stage = stage_config(cfg)
    return checkpoint_file(train_once(stage, run_dir.parent / STAGES / run_id(stage), "init_from (first stage)"))


def load_weights(model: Transformer, path: str | Path) -> None:
    """Copy a checkpoint's weights into `model`, whose context, RoPE scaling and data may differ, not its shapes."""
    source = load_model_from_checkpoint(path).state_dict()
    target = model.state_dict()
    missing, unexpected = sorted(set(target) - set(source)), sorted(set(source) - set(target))
    mismatched = [f"{k}: {tuple(source[k].shape)} in the checkpoint, {tuple(v.shape)} here"
                  for k, v in target.items() if k in source and source[k].shape != v.shape]  # fmt: skip
    if missing or unexpected or mismatched:
        raise ValueError(
            f"init_from: {path} does not fit this model (only context, RoPE scaling and data may change); "
            f"shape mismatch: {mismatched or 'none'}; missing: {missing or 'none'}; unexpected: {unexpected or 'none'}"
        )
    model.load_state_dict(source)
