"""Training with Lightning: the LightningModule, optimiser and schedules, callbacks, loggers and the run itself."""
