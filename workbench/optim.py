"""AdamW with decay only on matrices that are not embeddings, and warmup + cosine / warmup-stable-decay schedules."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Norm weights and biases are 1-D; embeddings are looked up, not multiplied, so decay would only shrink them."""
    embeddings = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.dim() >= 2 and id(p) not in embeddings else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def lr_lambda(cfg: Mapping[str, Any]) -> Callable[[int], float]:
    """Multiplier of the peak lr at each optimiser step: linear warmup, then the chosen shape down to min_lr_ratio."""
    schedule, warmup, total, floor = cfg["schedule"], cfg["warmup_steps"], cfg["total_steps"], cfg["min_lr_ratio"]
    decay_start = total - int(cfg["decay_fraction"] * total) if schedule == "wsd" else warmup

    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if schedule == "constant" or step < decay_start:
            return 1.0
        progress = min(1.0, (step - decay_start) / max(1, total - decay_start))
        shape = 0.5 * (1 + math.cos(math.pi * progress)) if schedule == "cosine" else 1 - progress
        return floor + (1 - floor) * shape

    return f


def build_optimizer(model: nn.Module, cfg: Mapping[str, Any], fused: bool = True) -> dict[str, Any]:
    """Lightning's `configure_optimizers` return value, stepping the schedule every optimiser step.

    AdamW runs fused (one kernel over all parameters): on CPU 2.7x faster than the default per-parameter loop at
    the `grid_cpu` shape and 5.8x at `small` (2.3 vs 6.2 ms, 6.7 vs 38.6 ms a step; the multi-tensor `foreach`
    path is slower than the loop there). `fused=False` for fp16 with a GradScaler (`16-mixed`): a fused AdamW
    unscales the gradients inside its own kernel, after Lightning would clip them, so Lightning refuses to clip;
    the unfused one leaves unscaling to the GradScaler (`unscale_` before clipping), so clipping sees true gradients.
    """
    opt = torch.optim.AdamW(param_groups(model, cfg["weight_decay"]), lr=cfg["lr"], betas=tuple(cfg["betas"]),
                            eps=cfg["eps"], fused=fused)  # fmt: skip
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(cfg))
    return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
