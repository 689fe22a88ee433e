"""A mixture-of-experts block beside the dense MLP (Gemma 4's `enable_moe_block`).

The dense MLP keeps running; the block adds a routed branch and merges the two before the block's own post-MLP
norm: post_dense(dense) + post_moe(experts(pre_moe(x), router(x))), where x is the MLP sub-block's input (the
residual stream, not its pre-normed copy). Each token runs `moe_top_k` of `moe_experts` GeGLU experts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from workbench.blocks.linear import Linear, linear
from workbench.blocks.unscaled_norm import UnscaledRMSNorm
from workbench.registry import NORM

if TYPE_CHECKING:
    from workbench.config import ModelConfig


class Router(nn.Module):
    """Expert choice per token: softmax over linear logits of the scaled unit-RMS input, its top k renormalised.

    The input is x / rms(x) times a learned per-channel `scale` and d^-0.5; the chosen weights are then multiplied
    by a learned `per_expert_scale` (both start at 1), as `transformers`' Gemma4TextRouter computes them.
    """

    def __init__(self, d_model: int, n_experts: int, top_k: int, eps: float, bias: bool) -> None:
        super().__init__()
        self.top_k = top_k
        self.norm = UnscaledRMSNorm(d_model, eps)
        self.proj = Linear(d_model, n_experts, bias=bias)
        self.scale = nn.Parameter(torch.ones(d_model))
        self.per_expert_scale = nn.Parameter(torch.ones(n_experts))
        self.input_multiplier = d_model**-0.5

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (N, d) -> float32 weights (N, k) and expert indices (N, k)."""
        logits = self.proj(self.norm(x) * self.scale * self.input_multiplier)
        probs = logits.softmax(dim=-1, dtype=torch.float32)
        weights, index = probs.topk(self.top_k, dim=-1)
        weights = weights / weights.sum(dim=-1, keepdim=True)
        return weights * self.per_expert_scale[index], index


class Experts(nn.Module):
    """`n_experts` GeGLU MLPs stored as (E, 2 I, d) gate-and-up and (E, d, I) down tensors, `transformers`' layout.

    Each expert runs only on the tokens routed to it, so the FLOPs are those of k experts per token.
    """

    def __init__(self, d_model: int, hidden: int, n_experts: int) -> None:
        super().__init__()
        self.gate_up_proj = nn.Parameter(torch.empty(n_experts, 2 * hidden, d_model))
        self.down_proj = nn.Parameter(torch.empty(n_experts, d_model, hidden))

    def forward(self, x: torch.Tensor, weights: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        out = torch.zeros_like(x)
        for expert in range(self.gate_up_proj.shape[0]):
            token, slot = torch.where(index == expert)
            gate, up = linear(x[token], self.gate_up_proj[expert]).chunk(2, dim=-1)
            h = linear(F.gelu(gate, approximate="tanh") * up, self.down_proj[expert])
            out.index_add_(0, token, (h * weights[token, slot, None]).to(out.dtype))
        return out


class MoEBlock(nn.Module):
    """The routed branch and the merge with the dense MLP's output (norms: `cfg.norm`, as the block's own)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        norm = lambda: NORM.build(cfg.norm, cfg.d_model, cfg.norm_eps, cfg.bias)  # noqa: E731
        self.dense_post_norm, self.pre_norm, self.post_norm = norm(), norm(), norm()
        self.router = Router(cfg.d_model, cfg.moe_experts, cfg.moe_top_k, cfg.norm_eps, cfg.bias)
        self.experts = Experts(cfg.d_model, cfg.resolved_moe_hidden, cfg.moe_experts)

    def forward(self, x: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        """x: the MLP sub-block's input (B, T, d); dense: the dense MLP's output on it."""
        flat = x.reshape(-1, x.shape[-1])
        weights, index = self.router(flat)
        routed = self.experts(self.pre_norm(flat), weights, index).reshape(x.shape)
        return self.dense_post_norm(dense) + self.post_norm(routed)

    def flops(self, tokens: int) -> int:
        """Router logits, and k experts' three matrices per token (the convention: workbench/accounting.py)."""
        per_expert = self.experts.gate_up_proj[0].numel() + self.experts.down_proj[0].numel()
        return 2 * tokens * (self.router.proj.weight.numel() + self.router.top_k * per_expert)
