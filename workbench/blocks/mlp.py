"""Feed-forward blocks, registered by name. Gated kinds have three matrices, plain kinds two.

Each reports its forward FLOPs from its own matrices (the convention: workbench/accounting.py).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from workbench.registry import MLP


def _gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    return F.gelu(x, approximate="tanh")


def _relu_squared(x: torch.Tensor) -> torch.Tensor:
    return F.relu(x).square()


class GatedMLP(nn.Module):
    """down(act(gate(x)) * up(x)): GeGLU with tanh-GELU, SwiGLU with SiLU."""

    def __init__(self, d_model: int, hidden: int, bias: bool, act: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(d_model, hidden, bias=bias)
        self.up_proj = nn.Linear(d_model, hidden, bias=bias)
        self.down_proj = nn.Linear(hidden, d_model, bias=bias)
        self.act = act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(self.act(self.gate_proj(x)) * self.up_proj(x))

    def flops(self, tokens: int) -> int:
        return 2 * tokens * sum(p.weight.numel() for p in (self.gate_proj, self.up_proj, self.down_proj))


class PlainMLP(nn.Module):
    """down(act(up(x))): the classic two-matrix MLP."""

    def __init__(self, d_model: int, hidden: int, bias: bool, act: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.up_proj = nn.Linear(d_model, hidden, bias=bias)
        self.down_proj = nn.Linear(hidden, d_model, bias=bias)
        self.act = act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(self.act(self.up_proj(x)))

    def flops(self, tokens: int) -> int:
        return 2 * tokens * (self.up_proj.weight.numel() + self.down_proj.weight.numel())


MLP.register("geglu")(lambda d, h, bias: GatedMLP(d, h, bias, _gelu_tanh))
MLP.register("swiglu")(lambda d, h, bias: GatedMLP(d, h, bias, F.silu))
MLP.register("gelu")(lambda d, h, bias: PlainMLP(d, h, bias, F.gelu))
MLP.register("relu2")(lambda d, h, bias: PlainMLP(d, h, bias, _relu_squared))
