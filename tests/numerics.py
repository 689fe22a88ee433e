"""Tolerances derived from floating-point arithmetic, so that a numerical test passes on any CPU's kernels.

A value computed in `dtype` carries rounding: each operation rounds to a relative error of at most eps / 2
(eps = `torch.finfo(dtype).eps`), and a value that passes through n roundings in sequence (a dot product of length n
contributes n) is off by about sqrt(n) * eps times its scale when the roundings are independent, n * eps at worst
(Higham and Mary, "A new approach to probabilistic rounding error analysis", SIAM J. Sci. Comput. 41, 2019).
A CPU's kernel set (default, AVX2, AVX512, AMX) changes the summation order, so which roundings happen, but not
this estimate. The tolerance on the largest deviation is therefore

    max |out - ref|  <=  SAFETY * sides * eps * sqrt(n) * max |ref|

with sides = 1 against a float64 reference (its own rounding is 2**-29 times float32's) and 2 against a reference
computed in the same dtype (both sides round), and SAFETY the margin for what sqrt(n) leaves out: normalisations,
softmax and soft-caps amplify an input's error by their condition number. docs/testing.md lists the ratios measured
under each kernel set.
"""

from __future__ import annotations

import math

import torch

from workbench.config import ModelConfig

SAFETY = 8.0


def attention_terms(head_dim: int, keys: int) -> int:
    """The roundings along one attention output: q.k over the head, the softmax's sum over the keys, then the
    probability-weighted sum over them."""
    return head_dim + 2 * keys


def transformer_terms(cfg: ModelConfig, seq: int) -> int:
    """The roundings along one logit's longest path through `cfg`'s model over `seq` positions.

    Per layer, the reductions a value passes through one after another: the q/k/v projection over d_model, q.k over
    a head and the softmax over up to `seq` keys (`attention_terms`), the output projection over heads x head width,
    the MLP's two matmuls (the MoE block beside it adds its own error); then the LM head over d_model. Latent
    attention adds the up-projection from its latent."""
    head = max(cfg.resolved_head_dim, cfg.head_dim_global or 0)
    latent = cfg.mla_latent_dim if "mla" in (cfg.attention, cfg.attention_global) else 0
    mlp = cfg.mlp_hidden * (2 if cfg.double_wide_mlp else 1) + (cfg.resolved_moe_hidden if cfg.moe_experts else 0)
    per_layer = cfg.d_model + latent + attention_terms(head, seq) + cfg.n_heads * head + cfg.d_model + mlp
    return cfg.n_layers * per_layer + cfg.d_model


def sides(ref: torch.Tensor, dtype: torch.dtype) -> int:
    """1 against a float64 reference of a coarser computation, 2 where the reference rounds like the result."""
    return 1 if ref.dtype == torch.float64 and dtype != torch.float64 else 2


def tolerance(ref: torch.Tensor, dtype: torch.dtype, terms: int, elementwise: bool = False) -> torch.Tensor:
    """The largest deviation from `ref` that `terms` roundings in `dtype` explain (see the module): one bound on the
    scale max|ref|, or with `elementwise` one per element on its own magnitude (values spanning decades)."""
    scale = ref.detach().double().abs()
    if not elementwise:
        scale = scale.max() if ref.numel() else scale.sum()
    return SAFETY * sides(ref, dtype) * torch.finfo(dtype).eps * math.sqrt(max(terms, 1)) * scale


def assert_close_to_reference(
    out: torch.Tensor | float,
    ref: torch.Tensor | float,
    dtype: torch.dtype | None = None,
    *,
    terms: int = 1,
    elementwise: bool = False,
) -> None:
    """`out` equals `ref` up to the rounding of a computation in `dtype` (default: `out`'s) with `terms` roundings
    along its longest path: `transformer_terms` for a model's logits, the reduction length for one kernel."""
    out, ref = torch.as_tensor(out), torch.as_tensor(ref)
    assert out.shape == ref.shape, f"shapes differ: {tuple(out.shape)} vs {tuple(ref.shape)}"
    dtype = dtype or out.dtype
    excess = (out.detach().double() - ref.detach().double()).abs() - tolerance(ref, dtype, terms, elementwise)
    worst = int(excess.argmax()) if excess.numel() else 0
    assert not excess.numel() or excess.flatten()[worst] <= 0, (
        f"|out - ref| exceeds {SAFETY:g} x eps({dtype}) x sqrt({terms} roundings) x "
        f"{'|ref|' if elementwise else 'max|ref|'} x {sides(ref, dtype)} side(s) at flat index {worst}: "
        f"out {out.flatten()[worst].item():.6g}, ref {ref.flatten()[worst].item():.6g}, "
        f"max|out - ref| {(out.double() - ref.double()).abs().max().item():.4g}, "
        f"bound {tolerance(ref, dtype, terms, elementwise).max().item():.4g}"
    )
