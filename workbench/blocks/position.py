"""Position encodings applied to queries and keys inside attention, registered by name.

Builders take (rot_dim, cfg, local): the number of leading head dims to rotate, the model config, and whether
the layer is local. RoPE base and context extension are per layer type: extension applies to global layers.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import nn

from workbench.registry import POSITION

if TYPE_CHECKING:
    from workbench.config import ModelConfig

ROPE_SCALING_TYPES = ("linear", "ntk", "yarn")


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def rope_frequencies(
    rot_dim: int, base: float, factor: float, kind: str, original_context: int
) -> tuple[torch.Tensor, float]:
    """Inverse frequencies and cos/sin multiplier for a context-extension method (factor 1: plain RoPE).

    linear: positions divided by `factor` (position interpolation, Gemma 3's choice).
    ntk:    NTK-aware base change, base * factor^(d / (d - 2)); the highest frequency is left as it is.
    yarn:   YaRN (Peng et al. 2023), as `transformers` computes it: dims rotating more than 32 times within
            `original_context` keep their frequency, those rotating less than once are interpolated by `factor`,
            a linear ramp in between; cos/sin scaled by 0.1 ln(factor) + 1.
    """
    exponents = torch.arange(0, rot_dim, 2, dtype=torch.float32) / rot_dim
    plain = 1.0 / (base**exponents)
    if factor == 1.0:
        return plain, 1.0
    if kind == "linear":
        return plain / factor, 1.0
    if kind == "ntk":
        return 1.0 / ((base * factor ** (rot_dim / (rot_dim - 2))) ** exponents), 1.0

    def correction_dim(rotations: float) -> float:
        return rot_dim * math.log(original_context / (rotations * 2 * math.pi)) / (2 * math.log(base))

    low, high = max(math.floor(correction_dim(32)), 0), min(math.ceil(correction_dim(1)), rot_dim - 1)
    ramp = ((torch.arange(rot_dim // 2, dtype=torch.float32) - low) / max(high - low, 1e-3)).clamp(0, 1)
    keep = 1 - ramp  # 1: extrapolate (keep the frequency), 0: interpolate
    return plain / factor * (1 - keep) + plain * keep, 0.1 * math.log(factor) + 1.0


@POSITION.register("rope")
class RoPE(nn.Module):
    """Rotary embedding (rotate-half convention) on the first `rot_dim` dims of each head.

    cos/sin are computed in float32 and cast to the input dtype, as `transformers` does.
    """

    def __init__(self, rot_dim: int, cfg: ModelConfig, local: bool) -> None:
        super().__init__()
        self.rot_dim = rot_dim
        base = cfg.rope_base_local if local else cfg.rope_base_global
        factor = 1.0 if local else cfg.rope_scaling_global
        original = cfg.rope_original_context or cfg.max_seq_len
        inv_freq, self.multiplier = rope_frequencies(rot_dim, base, factor, cfg.rope_scaling_type, original)
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def forward(self, q: torch.Tensor, k: torch.Tensor, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """q: (B, H, T, D), k: (B, Hkv, T, D), positions: (T,) absolute token positions."""
        freqs = positions[:, None].float() * self.inv_freq.float()
        emb = torch.cat((freqs, freqs), dim=-1)
        cos, sin = (emb.cos() * self.multiplier).to(q.dtype), (emb.sin() * self.multiplier).to(q.dtype)
        return self._rotate(q, cos, sin), self._rotate(k, cos, sin)

    def _rotate(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        if self.rot_dim == x.shape[-1]:
            return x * cos + rotate_half(x) * sin
        rot, keep = x[..., : self.rot_dim], x[..., self.rot_dim :]
        return torch.cat((rot * cos + rotate_half(rot) * sin, keep), dim=-1)


@POSITION.register("none")
class NoPositionEncoding(nn.Module):
    """NoPE: attention sees no explicit position signal beyond the causal mask."""

    def __init__(self, rot_dim: int, cfg: ModelConfig, local: bool) -> None:
        super().__init__()

    def forward(self, q: torch.Tensor, k: torch.Tensor, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return q, k
