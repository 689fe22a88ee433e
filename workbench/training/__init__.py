"""The training app: Hydra configs through one schema, plans of jobs, and Lightning fits. What needs only torch
(optimiser, losses, probes, checkpoints, timing, precision, distillation) is the library's, one level up."""
