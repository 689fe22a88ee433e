"""Per-layer input embeddings (PLE, Gemma 4): every layer gets a small input of its own, from the token and context.

`PerLayerInputs` computes them for all layers at once, (B, T, n_layers, ple_dim): a token-id lookup in a table of
n_layers x ple_dim columns (times sqrt(ple_dim)) averaged, by 1/sqrt(2), with a normalised projection of the
(scaled) token embedding (times d^-0.5). `PerLayerInputGate` adds layer i's input to the residual stream after
the MLP: x + norm(proj(gelu(gate(x)) * input_i)). The table is large (vocab x n_layers x ple_dim) but costs
no FLOPs: a lookup, which is what makes it cheap to keep off the accelerator.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from workbench.blocks.linear import Linear
from workbench.registry import NORM

if TYPE_CHECKING:
    from workbench.config import ModelConfig


class PerLayerInputs(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.n_layers, self.dim = cfg.n_layers, cfg.ple_dim
        width = cfg.n_layers * cfg.ple_dim
        self.embed = nn.Embedding(cfg.resolved_ple_vocab_size, width)
        self.proj = Linear(cfg.d_model, width, bias=cfg.bias)
        self.norm = NORM.build(cfg.norm, cfg.ple_dim, cfg.norm_eps, cfg.bias)
        self.proj_multiplier = cfg.d_model**-0.5
        self.register_buffer("embed_multiplier", torch.tensor(math.sqrt(cfg.ple_dim)), persistent=False)

    def forward(self, input_ids: torch.Tensor, embedded: torch.Tensor) -> torch.Tensor:
        """input_ids (B, T) and their scaled embeddings (B, T, d) -> (B, T, n_layers, ple_dim)."""
        shape = (*input_ids.shape, self.n_layers, self.dim)
        table = self.embed(input_ids)
        tokens = (table * self.embed_multiplier.to(table.dtype)).reshape(shape)
        context = self.norm((self.proj(embedded) * self.proj_multiplier).reshape(shape))
        return (context + tokens) * 2**-0.5

    def flops(self, tokens: int) -> int:
        """The context projection; the lookup is no matmul (the convention: workbench/accounting.py)."""
        return 2 * tokens * self.proj.weight.numel()


class PerLayerInputGate(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.gate = Linear(cfg.d_model, cfg.ple_dim, bias=cfg.bias)
        self.proj = Linear(cfg.ple_dim, cfg.d_model, bias=cfg.bias)
        self.norm = NORM.build(cfg.norm, cfg.d_model, cfg.norm_eps, cfg.bias)

    def forward(self, x: torch.Tensor, per_layer_input: torch.Tensor) -> torch.Tensor:
        """The residual stream (B, T, d) plus this layer's gated input (B, T, ple_dim)."""
        h = F.gelu(self.gate(x), approximate="tanh") * per_layer_input
        return x + self.norm(self.proj(h))

    def flops(self, tokens: int) -> int:
        return 2 * tokens * (self.gate.weight.numel() + self.proj.weight.numel())
