"""Normalisation layers, registered by name."""

from __future__ import annotations

import torch
from torch import nn

from workbench.registry import NORM


def _normalise(
    x: torch.Tensor, weight: torch.Tensor, eps: float, offset: float, cast_first: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(output, normalised x, 1/rms, scale) in float32, the output in x's dtype (`cast_first`: see `rms_norm`)."""
    xf = x.float()
    rstd = torch.rsqrt(xf.square().mean(-1, keepdim=True) + eps)
    normed = xf * rstd
    scale = weight.float() + offset if offset else weight.float()
    out = normed.to(x.dtype) * weight if cast_first else (normed * scale).to(x.dtype)
    return out, normed, rstd, scale


class _RMSNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, eps: float, offset: float, cast_first: bool):
        out, normed, rstd, scale = _normalise(x, weight, eps, offset, cast_first)
        ctx.save_for_backward(normed, rstd, scale)
        ctx.dtypes = x.dtype, weight.dtype
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        normed, rstd, scale = ctx.saved_tensors
        x_dtype, w_dtype = ctx.dtypes
        g = grad.float()
        gn = g * normed
        grad_weight = gn.sum(tuple(range(gn.dim() - 1)))
        mean = (gn * scale).mean(-1, keepdim=True)  # mean over the row of (dL/d normed) * normed
        grad_x = (g * scale).addcmul_(normed, mean, value=-1).mul_(rstd)
        return grad_x.to(x_dtype), grad_weight.to(w_dtype), None, None, None


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float, offset: float, cast_first: bool) -> torch.Tensor:
    """x / rms(x) * (weight + offset), in float32, with a hand-written backward.

    Autograd's backward of the composite (and of `F.rms_norm`, whose backward is the same composite) makes about
    ten passes over the activations; this one makes six from the saved normalised input and 1/rms: 2.4x faster
    forward + backward on CPU at the small preset's shapes, where the norms (six per layer with QK-norm) were
    ~15% of a train step. `cast_first` is Llama's order (normalised x cast to x's dtype, then scaled, promoting);
    otherwise Gemma's (scaled in float32, then cast). The forward is the composite's, op for op; without a
    gradient to record (inference, decoding) it runs without the autograd.Function's per-call overhead.
    """
    if torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad):
        return _RMSNorm.apply(x, weight, eps, offset, cast_first)
    return _normalise(x, weight, eps, offset, cast_first)[0]


@NORM.register("rmsnorm")
class RMSNorm(nn.Module):
    """Llama-style RMSNorm: normalise in float32, cast back, then scale by w (initialised to 1)."""

    def __init__(self, dim: int, eps: float, bias: bool = False) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rms_norm(x, self.weight, self.eps, 0.0, True)


@NORM.register("gemma_rmsnorm")
class GemmaRMSNorm(nn.Module):
    """Gemma RMSNorm: weight stored as an offset from 1 (initialised to 0), all in float32, cast at the end."""

    def __init__(self, dim: int, eps: float, bias: bool = False) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.zeros(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rms_norm(x, self.weight, self.eps, 1.0, False)


@NORM.register("layernorm")
def layer_norm(dim: int, eps: float, bias: bool = False) -> nn.LayerNorm:
    return nn.LayerNorm(dim, eps=eps, bias=bias)


@torch.no_grad()
def set_gain(norm: nn.Module, gain: float) -> None:
    """Set a norm's elementwise scale to `gain` (a Gemma RMSNorm stores it as an offset from 1)."""
    norm.weight.fill_(gain - 1.0 if isinstance(norm, GemmaRMSNorm) else gain)
