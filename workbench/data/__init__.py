"""Training data: token streams from text sources (cached as memmaps) and synthetic recall tasks."""

from workbench.data.build import build_data
from workbench.data.bundle import DataBundle

__all__ = ["DataBundle", "build_data"]
