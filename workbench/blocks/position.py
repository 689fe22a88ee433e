"""Position encodings applied to queries and keys inside attention, registered by name."""

from __future__ import annotations

import torch
from torch import nn

from workbench.registry import POSITION


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


@POSITION.register("rope")
class RoPE(nn.Module):
    """Rotary embedding (rotate-half convention) on the first `fraction` of head_dim.

    `scaling` is linear position interpolation (positions divided by it), as Gemma 3 uses on global layers.
    cos/sin are computed in float32 and cast to the input dtype, as `transformers` does.
    """

    def __init__(self, head_dim: int, base: float, scaling: float = 1.0, fraction: float = 1.0) -> None:
        super().__init__()
        self.rot_dim = int(head_dim * fraction)
        exponents = torch.arange(0, self.rot_dim, 2, dtype=torch.float32) / self.rot_dim
        self.register_buffer("inv_freq", 1.0 / (base**exponents) / scaling, persistent=False)

    def forward(self, q: torch.Tensor, k: torch.Tensor, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """q: (B, H, T, D), k: (B, Hkv, T, D), positions: (T,) absolute token positions."""
        freqs = positions[:, None].float() * self.inv_freq.float()
        emb = torch.cat((freqs, freqs), dim=-1)
        cos, sin = emb.cos().to(q.dtype), emb.sin().to(q.dtype)
        return self._rotate(q, cos, sin), self._rotate(k, cos, sin)

    def _rotate(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        if self.rot_dim == x.shape[-1]:
            return x * cos + rotate_half(x) * sin
        rot, keep = x[..., : self.rot_dim], x[..., self.rot_dim :]
        return torch.cat((rot * cos + rotate_half(rot) * sin, keep), dim=-1)


@POSITION.register("none")
class NoPositionEncoding(nn.Module):
    """NoPE: attention sees no explicit position signal beyond the causal mask."""

    def __init__(self, head_dim: int, base: float, scaling: float = 1.0, fraction: float = 1.0) -> None:
        super().__init__()

    def forward(self, q: torch.Tensor, k: torch.Tensor, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return q, k
