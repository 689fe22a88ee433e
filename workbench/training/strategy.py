"""`trainer.devices`, `trainer.num_nodes` and `trainer.strategy` → the Trainer's arguments, validated before compute.

Our names: `auto` (one process, or Lightning's choice), `ddp` (replicated weights, all-reduced gradients), `fsdp2`
(Lightning's `ModelParallelStrategy`: `LMModule.configure_model` applies `fully_shard` per block and to the
root over a 1-D data-parallel mesh), `deepspeed_zero3` (needs the optional `deepspeed` package). Any name in
Lightning's strategy registry (`fsdp`, `deepspeed_stage_2`, ...) is passed through as is.
`data.batch_size` is the global batch: each of the world's ranks trains on its own slice of every batch. The values
are checked before any compute by `training.validate` (names, counts, the deepspeed package, batch / world size).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from lightning.pytorch.strategies import DDPStrategy, ModelParallelStrategy, Strategy
from torch import nn
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.fsdp import FSDPModule, fully_shard
from torch.distributed.tensor import DTensor


def build_strategy(trainer_cfg: Mapping[str, Any]) -> dict[str, Any]:
    """Trainer kwargs `devices`, `num_nodes`, `strategy` from a validated `trainer` node (`training.validate`)."""
    devices, num_nodes, name = trainer_cfg["devices"], trainer_cfg["num_nodes"], trainer_cfg["strategy"]
    strategy: str | Strategy = name
    if name == "ddp":
        strategy = DDPStrategy(find_unused_parameters=False)
    elif name == "fsdp2":  # one flat data-parallel mesh over every rank; full (unsharded) checkpoints, by rank 0
        strategy = ModelParallelStrategy(
            data_parallel_size=devices * num_nodes, tensor_parallel_size=1, save_distributed_checkpoint=False
        )
    elif name == "deepspeed_zero3":
        strategy = "deepspeed_stage_3"
    return {"devices": devices, "num_nodes": num_nodes, "strategy": strategy}


def fully_shard_model(model: nn.Module, mesh: DeviceMesh) -> None:
    """FSDP2: each transformer block is one all-gather unit, the root holds the rest (embedding, tied head, norm).

    Idempotent: Lightning calls `configure_model` again for `trainer.validate` after `trainer.fit`.
    """
    if isinstance(model, FSDPModule):
        return
    for block in model.blocks:
        fully_shard(block, mesh=mesh)
    fully_shard(model, mesh=mesh)


def total_grad_norm(model: nn.Module) -> torch.Tensor:
    """2-norm over all gradients; FSDP2 gradients are DTensor shards, whose norm is reduced across ranks here."""
    norm = torch.nn.utils.get_total_norm([p.grad for p in model.parameters() if p.grad is not None], norm_type=2.0)
    return norm.full_tensor() if isinstance(norm, DTensor) else norm


def check_launch(trainer: L.Trainer) -> None:
    """Fail before any rank starts where Lightning would start ranks 1.. by re-running the command line.

    Under `--multirun` that command is the whole sweep; there the cluster must start the ranks (SLURM via
    `hydra/launcher=submitit_slurm` with `tasks_per_node` = `trainer.devices`).
    """
    env = getattr(trainer.strategy, "cluster_environment", None)
    if trainer.world_size > 1 and env is not None and not env.creates_processes_externally and _in_multirun():
        raise ValueError(
            f"trainer.devices: got {trainer.num_devices} under --multirun; allowed: 1 unless the cluster starts "
            "the ranks (hydra/launcher=submitit_slurm with hydra.launcher.tasks_per_node = trainer.devices); "
            "or train this arm as a single run"
        )


def _in_multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
