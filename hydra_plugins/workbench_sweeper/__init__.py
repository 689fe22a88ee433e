"""Hydra instantiates sweepers only from the `hydra_plugins` namespace: this registers the workbench's own."""

from workbench.training.sweeper import GridSweeper


class WorkbenchSweeper(GridSweeper):
    """`hydra/sweeper=workbench`: `workbench.training.sweeper.GridSweeper` where Hydra looks for plugins."""
