"""Feed-forward blocks, registered by name. Gated kinds have three matrices, plain kinds two."""

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


class PlainMLP(nn.Module):
    """down(act(up(x))): the classic two-matrix MLP."""

    def __init__(self, d_model: int, hidden: int, bias: bool, act: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.up_proj = nn.Linear(d_model, hidden, bias=bias)
        self.down_proj = nn.Linear(hidden, d_model, bias=bias)
        self.act = act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(self.act(self.up_proj(x)))


GATED_MLPS = ("geglu", "swiglu")

MLP.register("geglu")(lambda d, h, bias: GatedMLP(d, h, bias, _gelu_tanh))
MLP.register("swiglu")(lambda d, h, bias: GatedMLP(d, h, bias, F.silu))
MLP.register("gelu")(lambda d, h, bias: PlainMLP(d, h, bias, F.gelu))
MLP.register("relu2")(lambda d, h, bias: PlainMLP(d, h, bias, _relu_squared))
