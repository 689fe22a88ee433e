"""Position encodings applied to queries and keys inside attention, registered by name.

Builders take (rot_dim, cfg, local, head_dim=None): the number of head dims to rotate, the model config, whether
the layer is local, and the head width when only part of it rotates. RoPE base and context extension are per layer
type: extension applies to global layers. A partial rotation is laid out as `cfg.rope_partial` says:
leading:      the first rot_dim dims rotate, with frequencies spread over those dims (GPT-NeoX's rotary_pct);
proportional: the frequencies of a whole-head RoPE, the slowest (1 - fraction) of them set to 0, i.e. dims that
              never turn (Gemma 4's global layers: `rope_type: proportional` with `partial_rotary_factor`).
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
ROPE_PARTIAL_LAYOUTS = ("leading", "proportional")


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
    """Rotary embedding (rotate-half convention) on `rot_dim` dims of each head, laid out as `cfg.rope_partial`.

    cos/sin are computed in float32 and cast to the input dtype, as `transformers` does.
    """

    def __init__(self, rot_dim: int, cfg: ModelConfig, local: bool, head_dim: int | None = None) -> None:
        super().__init__()
        base = cfg.rope_base_local if local else cfg.rope_base_global
        factor = 1.0 if local else cfg.rope_scaling_global
        original = cfg.rope_original_context or cfg.max_seq_len
        proportional = cfg.rope_partial == "proportional" and head_dim is not None and head_dim > rot_dim
        self.rot_dim = head_dim if proportional else rot_dim
        inv_freq, self.multiplier = rope_frequencies(self.rot_dim, base, factor, cfg.rope_scaling_type, original)
        if proportional:
            inv_freq[rot_dim // 2 :] = 0.0  # cos 1, sin 0: those pairs stay as they are
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def forward(self, q: torch.Tensor, k: torch.Tensor, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """q: (B, H, T, D), k: (B, Hkv, T, D), positions: (T,) token positions, or (B, T) per row (documents)."""
        cos, sin = self._cos_sin(positions, q.dtype)
        return self._rotate(q, cos, sin), self._rotate(k, cos, sin)

    def rotate(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """One tensor at its own positions: cached keys rotated when they are read (keys shared with values)."""
        return self._rotate(x, *self._cos_sin(positions, x.dtype))

    def _cos_sin(self, positions: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        freqs = positions[..., None].float() * self.inv_freq.float()
        emb = torch.cat((freqs, freqs), dim=-1)
        if emb.dim() == 3:  # (B, T, D): per-row positions, broadcast over the heads
            emb = emb[:, None]
        return (emb.cos() * self.multiplier).to(dtype), (emb.sin() * self.multiplier).to(dtype)

    def _rotate(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        if self.rot_dim == x.shape[-1]:
            return x * cos + rotate_half(x) * sin
        rot, keep = x[..., : self.rot_dim], x[..., self.rot_dim :]
        return torch.cat((rot * cos + rotate_half(rot) * sin, keep), dim=-1)


@POSITION.register("none")
class NoPositionEncoding(nn.Module):
    """NoPE: attention sees no explicit position signal beyond the causal mask."""

    def __init__(self, rot_dim: int, cfg: ModelConfig, local: bool, head_dim: int | None = None) -> None:
        super().__init__()

    def forward(self, q: torch.Tensor, k: torch.Tensor, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return q, k

    def rotate(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        return x
