"""Building blocks; importing this package fills the registries in `workbench.registry`."""

from workbench.blocks import attention, mla, mlp, moe, norms, patterns, ple, position, unscaled_norm  # noqa: F401
