"""Rebuild a trained `Transformer` from a workbench run: its Lightning checkpoint plus the run's model config.

One loader for everything that starts from trained weights (a distillation teacher, a context-extension stage),
and `load_weights` for `init_from`: a run that starts from another's weights (not its optimiser state or step).
A checkpoint written by `LMModule` holds the model config under `model_config`; older ones fall back to the run
dir's config.yaml (`<run dir>/checkpoints/<name>.ckpt` -> `<run dir>/config.yaml`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

from workbench.config import ModelConfig
from workbench.model import Transformer, build_model

CONFIG_FILE = "config.yaml"  # a run dir's resolved config
CHECKPOINTS = "checkpoints"
LAST = Path(CHECKPOINTS, "last.ckpt")  # in a run dir
MODEL_CONFIG_KEY = "model_config"  # LMModule.on_save_checkpoint stores ModelConfig.to_dict() here
_PREFIXES = ("model._orig_mod.", "model.")  # LMModule's attribute, with torch.compile's wrapper when compiled


def checkpoint_file(path: str | Path) -> Path:
    """A checkpoint file as is; a run dir: its checkpoints/last.ckpt."""
    path = Path(path)
    if path.is_dir():
        path = path / LAST
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint: {path} does not exist (give a .ckpt file or a run dir that has one)")
    return path


class CorruptCheckpointError(RuntimeError):
    pass


def read_checkpoint(
    path: str | Path, map_location: str | torch.device = "cpu", keys: tuple[str, ...] = ("state_dict",)
) -> dict[str, Any]:
    """A checkpoint's content, holding `keys`; raises `CorruptCheckpointError` naming the file if it does not load."""
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=False)
        if missing := [k for k in keys if not isinstance(ckpt, dict) or k not in ckpt]:
            raise ValueError(f"not a Lightning checkpoint: no {' and '.join(missing)}")
    except Exception as e:  # truncated zip, garbage bytes, or not a Lightning checkpoint
        raise CorruptCheckpointError(f"checkpoint {path} is unreadable ({type(e).__name__}: {e})") from e
    return ckpt


def model_config_of(ckpt: dict[str, Any], ckpt_path: Path) -> ModelConfig:
    """The model config stored in the checkpoint, else the run's config.yaml beside its checkpoints dir."""
    if MODEL_CONFIG_KEY in ckpt:
        return ModelConfig.from_dict(ckpt[MODEL_CONFIG_KEY])
    config = ckpt_path.parent.parent / CONFIG_FILE
    if not config.is_file():
        raise FileNotFoundError(f"checkpoint: {ckpt_path} stores no model config and {config} does not exist")
    return ModelConfig.from_dict(OmegaConf.to_container(OmegaConf.load(config).model, resolve=True))


def load_model_from_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> Transformer:
    """The trained model of a run dir or `.ckpt` file, weights loaded strictly, in eval mode."""
    ckpt_path = checkpoint_file(path)
    ckpt = read_checkpoint(ckpt_path, map_location)
    model = build_model(model_config_of(ckpt, ckpt_path))
    model.load_state_dict(model_state(ckpt), strict=True)
    return model.eval()


def model_state(ckpt: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The model's tensors in a Lightning checkpoint, under the `Transformer`'s own names."""
    state = {}
    for key, value in ckpt["state_dict"].items():
        prefix = next((p for p in _PREFIXES if key.startswith(p)), None)
        if prefix is not None:
            state[key.removeprefix(prefix)] = value
    return state


def shape_mismatch(source: dict[str, Any], target: dict[str, Any]) -> str | None:
    """What keeps tensors `source` (name -> tensor) from loading into `target`'s, in words; None when they fit."""
    missing, unexpected = sorted(set(target) - set(source)), sorted(set(source) - set(target))
    mismatched = [f"{k}: {tuple(source[k].shape)} in the checkpoint, {tuple(v.shape)} here"
                  for k, v in target.items() if k in source and source[k].shape != v.shape]  # fmt: skip
    if not (missing or unexpected or mismatched):
        return None
    return f"shape mismatch: {mismatched or 'none'}; missing: {missing or 'none'}; unexpected: {unexpected or 'none'}"


def load_weights(model: Transformer, path: str | Path) -> None:
    """Copy a checkpoint's weights into `model`, whose context, RoPE scaling and data may differ, not its shapes."""
    source = load_model_from_checkpoint(path).state_dict()
    if why := shape_mismatch(source, model.state_dict()):
        raise ValueError(
            f"init_from: {path} does not fit this model (only context, RoPE scaling and data may change); {why}"
        )
    model.load_state_dict(source)
