"""`Linear`: nn.Linear whose float32 matmuls on CPU run on oneDNN, forward and backward.

PyTorch runs float32 matmuls on CPU through MKL's sgemm, which on AMD CPUs takes its AVX2 code path: ~100 GFLOP/s
on one core of this machine (an AMD EPYC with AVX-512), where oneDNN's kernels (`mkldnn::_linear_pointwise`, the
op inductor emits for CPU linears) reach 210-240 forward and for the input gradient, 140-200 for the weight
gradient, at the small preset's shapes (measured side by side, one thread). Matmuls are ~70% of a CPU train step,
so this is the largest single saving of the step. bfloat16 matmuls already run on oneDNN; autocast, tracing
(fvcore counts `aten::linear`) and compilation (inductor picks its own kernels) take plain `F.linear`, and so does
`matmul_kernel("aten")`, which benchmarks and tests use to compare the two.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

MATMUL_KERNELS = ("auto", "aten")
_kernel = "auto"
_onednn = getattr(torch.ops.mkldnn, "_linear_pointwise", None) if torch.backends.mkldnn.is_available() else None


@contextmanager
def matmul_kernel(name: str) -> Iterator[None]:
    """auto: oneDNN for CPU float32 linears where `uses_onednn` allows; aten: always `F.linear` (MKL on CPU)."""
    global _kernel
    if name not in MATMUL_KERNELS:
        raise ValueError(f"matmul kernel: got {name!r}; allowed: {', '.join(MATMUL_KERNELS)}")
    previous, _kernel = _kernel, name
    try:
        yield
    finally:
        _kernel = previous


def uses_onednn(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether `linear(x, weight)` runs on oneDNN: CPU float32 outside autocast, tracing and compilation."""
    return (
        _kernel == "auto"
        and _onednn is not None
        and x.device.type == "cpu"
        and x.dtype == weight.dtype == torch.float32
        and x.numel() > 0
        and not torch.is_autocast_enabled("cpu")
        and not torch.jit.is_tracing()
        and not torch.compiler.is_compiling()
    )


def _mm_t(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a @ b^T on oneDNN."""
    return _onednn(a, b, None, "none", [], "")


class _OneDNNLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return _onednn(x, weight, bias, "none", [], "")

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, weight = ctx.saved_tensors
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = _mm_t(grad, weight.t())
        grad2, x2 = grad.reshape(-1, grad.shape[-1]), x.reshape(-1, x.shape[-1])
        if ctx.needs_input_grad[1]:
            # dW = grad^T x, computed as (rows, cols) with rows the smaller dim: measured 1.3-1.4x faster that way
            out, inp = weight.shape
            grad_w = _mm_t(grad2.t(), x2.t()) if out <= inp else _mm_t(x2.t(), grad2.t()).t()
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = grad2.sum(0)
        return grad_x, grad_w, grad_b


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """`F.linear`, on oneDNN where `uses_onednn` says so."""
    if not uses_onednn(x, weight):
        return F.linear(x, weight, bias)
    needs_grad = x.requires_grad or weight.requires_grad or (bias is not None and bias.requires_grad)
    if torch.is_grad_enabled() and needs_grad:
        return _OneDNNLinear.apply(x, weight, bias)
    return _onednn(x, weight, bias, "none", [], "")


class Linear(nn.Linear):
    """nn.Linear (same parameters, names and init) computed by `linear`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x, self.weight, self.bias)
