"""Benchmarks that build, train or time models (`python -m benchmarks.<name>`); the analysis tools only read.

A bare training step is `workbench.timing.train_step` in each of them, as in the dry run's cost
estimate, so their step times are one measurement; `train_speed` times the real Lightning run instead.
"""
