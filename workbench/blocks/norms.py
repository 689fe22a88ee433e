"""Normalisation layers, registered by name."""

from __future__ import annotations

import torch
from torch import nn

from workbench.registry import NORM


@NORM.register("rmsnorm")
class RMSNorm(nn.Module):
    """Llama-style RMSNorm: normalise in float32, cast back, then scale by w (initialised to 1)."""

    def __init__(self, dim: int, eps: float, bias: bool = False) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        normed = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return normed.type_as(x) * self.weight


@NORM.register("gemma_rmsnorm")
class GemmaRMSNorm(nn.Module):
    """Gemma RMSNorm: weight stored as an offset from 1 (initialised to 0), all in float32, cast at the end."""

    def __init__(self, dim: int, eps: float, bias: bool = False) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.zeros(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        normed = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return (normed * (1.0 + self.weight.float())).type_as(x)


@NORM.register("layernorm")
def layer_norm(dim: int, eps: float, bias: bool = False) -> nn.LayerNorm:
    return nn.LayerNorm(dim, eps=eps, bias=bias)
