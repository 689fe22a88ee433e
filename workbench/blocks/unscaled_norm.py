"""RMSNorm without a learned scale: Gemma 4 normalises its values and its router input this way."""

from __future__ import annotations

import torch
from torch import nn

from workbench.registry import NORM


@NORM.register("rmsnorm_unscaled")
class UnscaledRMSNorm(nn.Module):
    """x / rms(x), computed in float32 and cast back; no parameters (`dim` and `bias` are the registry's signature)."""

    def __init__(self, dim: int, eps: float, bias: bool = False) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)).type_as(x)
