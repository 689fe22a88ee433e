"""Fake quantisation of weights with a straight-through estimator, post-training quantisation, and export.

Written here rather than taken from torchao (0.18 installs and runs on CPU): its symmetric int4 divides by
amax / 7.5, so a positive row maximum rounds to 8 and is clamped to 7, where the clamp's gradient is zero; its scales
are fp32, and its convert step targets its own kernels' layouts. Here the forward pass is exactly what
`export_weight` stores: symmetric codes with bf16 scales, one per row or per block of a row as `QuantFormat` says,
so the bytes exported equal `QuantFormat.matrix_bytes`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from workbench.blocks.linear import linear
from workbench.quant.formats import QuantFormat, get_format

E4M3_MAX = torch.finfo(torch.float8_e4m3fn).max  # 448


def _as_format(fmt: str | QuantFormat) -> QuantFormat:
    return get_format(fmt) if isinstance(fmt, str) else fmt


def _blocks(w: torch.Tensor, fmt: QuantFormat) -> torch.Tensor:
    """(rows, cols) -> (rows, n_blocks, block), the last block zero-padded; per channel is one block per row."""
    rows, cols = w.shape
    block = cols if fmt.block_size is None else fmt.block_size
    pad = -cols % block
    return F.pad(w, (0, pad)).view(rows, (cols + pad) // block, block)


def _qmax(fmt: QuantFormat) -> float:
    """Largest code; integers are symmetric, codes in [-qmax, qmax] (int4: [-7, 7]), so no zero point is stored."""
    return E4M3_MAX if fmt.element == "e4m3" else 2 ** (fmt.bits - 1) - 1


def quantize_weight(w: torch.Tensor, fmt: str | QuantFormat) -> tuple[torch.Tensor, torch.Tensor]:
    """Codes (rows, n_blocks, block; int8 or float8_e4m3fn) and bf16 scales (rows, n_blocks) of a 2-D weight."""
    fmt = _as_format(fmt)
    if fmt.element == "bf16":
        raise ValueError("quantize_weight: bf16 has no codes or scales; use fake_quantize")
    x = _blocks(w.detach().float(), fmt)
    qmax = _qmax(fmt)
    # the scale is rounded to bf16 first, so dequantisation with the stored scale reproduces the forward pass
    scale = (x.abs().amax(-1) / qmax).clamp(min=1e-12).to(torch.bfloat16)
    y = (x / scale.float().unsqueeze(-1)).clamp(-qmax, qmax)
    codes = y.to(torch.float8_e4m3fn) if fmt.element == "e4m3" else y.round().to(torch.int8)
    return codes, scale


def dequantize_weight(codes: torch.Tensor, scale: torch.Tensor, cols: int) -> torch.Tensor:
    """Inverse of `quantize_weight` (fp32), trimmed back to `cols` columns."""
    return (codes.float() * scale.float().unsqueeze(-1)).flatten(1)[:, :cols]


def fake_quantize(w: torch.Tensor, fmt: str | QuantFormat) -> torch.Tensor:
    """Quantise-dequantise `w` in the forward pass; the gradient passes straight through (identity)."""
    fmt = _as_format(fmt)
    if fmt.element == "bf16":
        q = w.detach().to(torch.bfloat16).to(w.dtype)
    else:
        q = dequantize_weight(*quantize_weight(w, fmt), w.shape[1]).to(w.dtype)
    return w + (q - w).detach()


class FakeQuantLinear(nn.Linear):
    """nn.Linear whose forward uses the fake-quantised weight; parameter names stay those of nn.Linear."""

    fmt: QuantFormat

    @classmethod
    def from_linear(cls, linear: nn.Linear, fmt: QuantFormat) -> FakeQuantLinear:
        if not isinstance(linear, cls):  # nn.Linear or workbench's `Linear`: the class `remove_fake_quant` restores
            linear.plain_class = type(linear)
        linear.__class__ = cls  # keeps the parameters themselves (optimizer state, sharing) and the state_dict keys
        linear.fmt = fmt
        return linear

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x, fake_quantize(self.weight, self.fmt), self.bias)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, fmt={self.fmt.name}"


class _FakeQuant(nn.Module):
    """Parametrisation for the embedding: a tied head reads `embed.weight` directly, so the weight itself must be
    the fake-quantised one (a forward override would quantise the lookup but not the head)."""

    def __init__(self, fmt: QuantFormat) -> None:
        super().__init__()
        self.fmt = fmt

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return fake_quantize(w, self.fmt)


def prepare_fake_quant(model: nn.Module, fmt: str | QuantFormat, embedding: bool = False) -> nn.Module:
    """In place: every nn.Linear becomes a FakeQuantLinear; with `embedding`, nn.Embedding weights are
    fake-quantised too (their state_dict key becomes `parametrizations.weight.original`)."""
    fmt = _as_format(fmt)
    for module in model.modules():
        if isinstance(module, nn.Linear):
            FakeQuantLinear.from_linear(module, fmt)
        elif embedding and isinstance(module, nn.Embedding):
            parametrize.register_parametrization(module, "weight", _FakeQuant(fmt))
    return model


def remove_fake_quant(model: nn.Module) -> nn.Module:
    """In place: back to the linears' own class / nn.Embedding holding the latent (unquantised) weights."""
    for module in model.modules():
        if isinstance(module, FakeQuantLinear):
            module.__class__ = module.plain_class
            del module.fmt, module.plain_class
        elif parametrize.is_parametrized(module, "weight"):
            parametrize.remove_parametrizations(module, "weight", leave_parametrized=False)
    return model


def _quantisable(model: nn.Module, embedding: bool) -> dict[str, nn.Parameter]:
    """2-D weights of linears (and embeddings), each shared tensor once (a tied head is the embedding)."""
    kinds = (nn.Linear, nn.Embedding) if embedding else (nn.Linear,)
    out: dict[str, nn.Parameter] = {}
    seen: set[int] = set()
    for name, module in model.named_modules():
        if isinstance(module, kinds):
            w = module.parametrizations.weight.original if parametrize.is_parametrized(module) else module.weight
            if id(w) not in seen:
                seen.add(id(w))
                out[f"{name}.weight"] = w
    return out


@torch.no_grad()
def quantize_model_ptq(model: nn.Module, fmt: str | QuantFormat, embedding: bool = False) -> nn.Module:
    """Post-training quantisation in place: each weight is replaced by its dequantised value."""
    fmt = _as_format(fmt)
    for w in _quantisable(model, embedding).values():
        w.copy_(fake_quantize(w, fmt))
    return model


@dataclass
class QuantizedWeight:
    """A stored weight: packed codes (uint8 bytes) and bf16 scales (empty for bf16)."""

    fmt: QuantFormat
    shape: tuple[int, int]
    data: torch.Tensor  # uint8
    scales: torch.Tensor  # bfloat16, (rows, n_blocks)

    @property
    def nbytes(self) -> int:
        return self.data.numel() + self.scales.numel() * self.scales.element_size()

    def dequantize(self) -> torch.Tensor:
        rows, cols = self.shape
        if self.fmt.element == "bf16":
            return self.data.view(torch.bfloat16).view(rows, cols).float()
        if self.fmt.element == "e4m3":
            codes = self.data.view(torch.float8_e4m3fn)
        else:  # two's-complement nibbles, two per byte, low nibble first, over the flattened (rows, cols) codes
            nibbles = torch.stack([self.data & 0xF, self.data >> 4], -1).flatten()[: rows * cols].to(torch.int8)
            codes = torch.where(nibbles > 7, nibbles - 16, nibbles)
        return dequantize_weight(_blocks(codes.view(rows, cols).float(), self.fmt), self.scales, cols)


def export_weight(w: torch.Tensor, fmt: str | QuantFormat) -> QuantizedWeight:
    """The real stored form of a 2-D weight; `nbytes == fmt.matrix_bytes(*w.shape)`."""
    fmt = _as_format(fmt)
    rows, cols = w.shape
    if fmt.element == "bf16":
        data = w.detach().to(torch.bfloat16).flatten().view(torch.uint8)
        return QuantizedWeight(fmt, (rows, cols), data, torch.empty(rows, 0, dtype=torch.bfloat16))
    codes, scales = quantize_weight(w, fmt)
    codes = codes.flatten(1)[:, :cols].flatten()  # drop the padding of the last block
    if fmt.element == "e4m3":
        data = codes.view(torch.uint8)
    else:
        nibbles = (codes.to(torch.int16) & 0xF).to(torch.uint8)
        nibbles = F.pad(nibbles, (0, nibbles.numel() % 2))
        data = nibbles[0::2] | (nibbles[1::2] << 4)
    return QuantizedWeight(fmt, (rows, cols), data, scales)


def export_model(model: nn.Module, fmt: str | QuantFormat, embedding: bool = False) -> dict[str, QuantizedWeight]:
    """Stored forms of every quantisable weight (latent weights of a fake-quant model included)."""
    return {name: export_weight(w, fmt) for name, w in _quantisable(model, embedding).items()}
