"""Feed-forward blocks, registered by name. Gated kinds have three matrices (gate and up in one projection), plain
kinds two.

Each reports its forward FLOPs from its own matrices (the convention: workbench/accounting.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from workbench.blocks.fused import fuse_split_linears
from workbench.blocks.linear import Linear
from workbench.registry import MLP


def _gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    return F.gelu(x, approximate="tanh")


def _relu_squared(x: torch.Tensor) -> torch.Tensor:
    return F.relu(x).square()


# gate activations of the gated kinds: (forward, backward writing d/dgate into `out`, which may alias the grad)
_GATES: dict[str, tuple[Callable[..., torch.Tensor], Callable[..., torch.Tensor]]] = {
    "gelu_tanh": (
        _gelu_tanh,
        lambda grad, x, out: torch.ops.aten.gelu_backward.grad_input(grad, x, approximate="tanh", grad_input=out),
    ),
    "silu": (F.silu, lambda grad, x, out: torch.ops.aten.silu_backward.grad_input(grad, x, grad_input=out)),
}


class _GatedProduct(torch.autograd.Function):
    """act(gate) * up from the fused (..., 2 * hidden) projection; the backward writes both halves of the input's
    gradient into one buffer, where autograd would build d/dgate and d/dup apart and concatenate them (a copy of
    the largest activation of the step)."""

    @staticmethod
    def forward(ctx, gate_up: torch.Tensor, gate: str) -> torch.Tensor:
        g, u = gate_up.chunk(2, dim=-1)
        a = _GATES[gate][0](g)
        ctx.save_for_backward(gate_up, a)
        ctx.gate = gate
        return a * u

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        gate_up, a = ctx.saved_tensors
        g, u = gate_up.chunk(2, dim=-1)
        grad_in = torch.empty_like(gate_up)
        grad_g, grad_u = grad_in.chunk(2, dim=-1)
        torch.mul(grad, a, out=grad_u)
        torch.mul(grad, u, out=grad_g)
        _GATES[ctx.gate][1](grad_g, g, grad_g)
        return grad_in, None


class GatedMLP(nn.Module):
    """down(act(gate(x)) * up(x)): GeGLU with tanh-GELU, SwiGLU with SiLU; gate and up are one projection."""

    def __init__(self, d_model: int, hidden: int, bias: bool, gate: str) -> None:
        super().__init__()
        self.gate_up_proj = Linear(d_model, 2 * hidden, bias=bias)  # rows: gate's, then up's
        self.down_proj = Linear(hidden, d_model, bias=bias)
        self.gate = gate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate_up = self.gate_up_proj(x)
        if torch.is_grad_enabled() and gate_up.requires_grad:
            return self.down_proj(_GatedProduct.apply(gate_up, self.gate))
        g, u = gate_up.chunk(2, dim=-1)  # inference, decoding: no autograd.Function overhead per call
        return self.down_proj(_GATES[self.gate][0](g) * u)

    def flops(self, tokens: int) -> int:
        return 2 * tokens * (self.gate_up_proj.weight.numel() + self.down_proj.weight.numel())

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        fuse_split_linears(state_dict, prefix, "gate_up_proj", ("gate_proj", "up_proj"))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


class PlainMLP(nn.Module):
    """down(act(up(x))): the classic two-matrix MLP."""

    def __init__(self, d_model: int, hidden: int, bias: bool, act: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.up_proj = Linear(d_model, hidden, bias=bias)
        self.down_proj = Linear(hidden, d_model, bias=bias)
        self.act = act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(self.act(self.up_proj(x)))

    def flops(self, tokens: int) -> int:
        return 2 * tokens * (self.up_proj.weight.numel() + self.down_proj.weight.numel())


MLP.register("geglu")(lambda d, h, bias: GatedMLP(d, h, bias, "gelu_tanh"))
MLP.register("swiglu")(lambda d, h, bias: GatedMLP(d, h, bias, "silu"))
MLP.register("gelu")(lambda d, h, bias: PlainMLP(d, h, bias, F.gelu))
MLP.register("relu2")(lambda d, h, bias: PlainMLP(d, h, bias, _relu_squared))
