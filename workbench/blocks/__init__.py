"""Building blocks; importing this package fills the registries in `workbench.registry`."""

from workbench.blocks import attention, mla, mlp, norms, patterns, position  # noqa: F401
