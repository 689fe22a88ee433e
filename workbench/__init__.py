"""workbench: an architecture-ablation and scaling-study workbench for transformer language models."""

from workbench.config import ModelConfig
from workbench.model import Transformer, build_model
from workbench.presets import get_preset, list_presets

__all__ = ["ModelConfig", "Transformer", "build_model", "get_preset", "list_presets"]
