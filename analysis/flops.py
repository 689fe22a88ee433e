"""Window-aware FLOPs from a `ModelConfig`, and the same count measured by fvcore on a real model.

Conventions: only matmuls are counted, at 2 FLOPs per multiply-add (norms, RoPE, activations, softmax and caps
are left out, as are bias adds). Attention costs 2 x (head_dim for QK^T + head_dim for PV) x n_heads per
(query, key) pair actually attended: Σ_i min(i+1, W) pairs for a local layer, Σ_i (i+1) for a global one, so a
sliding window's savings show up. The LM head runs on every position, as the model does. Training is forward +
backward = 3 x forward. fvcore counts one multiply-add as one flop; `fvcore_flops` doubles it to match.
Usage: `python -m analysis.flops gemma3-27b --context 32768 [--json]`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import warnings
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from analysis.presets_cli import add_preset_args, print_table, selected_presets
from workbench.blocks.mlp import GATED_MLPS
from workbench.blocks.patterns import LOCAL
from workbench.config import ModelConfig


@dataclass(frozen=True)
class LayerFlops:
    """Forward FLOPs of one layer over a pass of `tokens` new tokens."""

    layer: int
    type: str
    tokens: int
    pairs: int  # (query, key) pairs attended, per head
    projections: int  # q, k, v, o
    attention: int  # QK^T and PV over the attended pairs
    mlp: int

    @property
    def total(self) -> int:
        return self.projections + self.attention + self.mlp


def _prefix_pairs(n: int, window: int | None) -> int:
    """Σ_{i<n} min(i+1, W): pairs attended by the first n positions (W = None: no window)."""
    if window is None or n <= window:
        return n * (n + 1) // 2
    return window * (window + 1) // 2 + (n - window) * window


def attended_pairs(layer_type: str, tokens: int, window: int, start: int = 0) -> int:
    """Pairs attended by positions start..start+tokens-1 (the first `start` tokens are already cached)."""
    w = window if layer_type == LOCAL else None
    return _prefix_pairs(start + tokens, w) - _prefix_pairs(start, w)


def layer_flops(cfg: ModelConfig, tokens: int, start: int = 0) -> list[LayerFlops]:
    """Per-layer forward FLOPs for `tokens` new tokens after `start` cached ones (prefill: start=0)."""
    mlp = 2 * tokens * cfg.d_model * cfg.mlp_hidden * (3 if cfg.mlp in GATED_MLPS else 2)
    out = []
    for i, layer_type in enumerate(cfg.layer_types):
        pairs = attended_pairs(layer_type, tokens, cfg.window, start)
        proj, attn = _attention_flops(cfg, layer_type, tokens, start, pairs)
        out.append(LayerFlops(i, layer_type, tokens, pairs, proj, attn, mlp))
    return out


def _attention_flops(cfg: ModelConfig, layer_type: str, tokens: int, start: int, pairs: int) -> tuple[int, int]:
    """(projection, attention) FLOPs of one layer's attention block, by its registered kind."""
    kind, d, hd, h = cfg.attention_for(layer_type), cfg.d_model, cfg.resolved_head_dim, cfg.n_heads
    if kind == "mha":
        return 2 * tokens * d * hd * (2 * h + 2 * cfg.n_kv_heads), 2 * 2 * hd * h * pairs
    if kind == "mla":  # keys and values are re-expanded from the latent for every visible cached token
        rope, latent = cfg.mla_rope_dim, cfg.mla_latent_dim
        cached = min(start, cfg.window) if layer_type == "local" else start
        per_token = d * h * (hd + rope) + d * latent + d * rope + h * hd * d
        return 2 * tokens * per_token + 2 * (tokens + cached) * latent * 2 * h * hd, 2 * (2 * hd + rope) * h * pairs
    raise ValueError(f"attention: no FLOP formula for {kind!r}; known: mha, mla")


def head_flops(cfg: ModelConfig, tokens: int) -> int:
    return 2 * tokens * cfg.d_model * cfg.vocab_size


def forward_flops(cfg: ModelConfig, tokens: int, start: int = 0) -> int:
    return sum(lf.total for lf in layer_flops(cfg, tokens, start)) + head_flops(cfg, tokens)


def training_flops(cfg: ModelConfig, seq_len: int) -> int:
    """Forward + backward over one sequence of `seq_len` tokens (backward = 2 x forward)."""
    return 3 * forward_flops(cfg, seq_len)


def prefill_flops(cfg: ModelConfig, context: int) -> int:
    return forward_flops(cfg, context)


def decode_flops(cfg: ModelConfig, context: int) -> int:
    """One new token with `context` tokens already cached; Σ_{c<N} decode(c) == prefill(N)."""
    return forward_flops(cfg, 1, start=context)


def report(cfg: ModelConfig, context: int) -> dict[str, Any]:
    layers = layer_flops(cfg, context)
    decode = layer_flops(cfg, 1, start=context)
    fwd = forward_flops(cfg, context)
    return {
        "context": context,
        "forward": fwd,
        "forward_per_token": fwd / context,
        "training": 3 * fwd,
        "training_per_token": 3 * fwd / context,
        "decode": decode_flops(cfg, context),
        "forward_all_global": forward_flops(cfg.replace(layer_pattern="global"), context),
        "lm_head": head_flops(cfg, context),
        "layers": [{**dataclasses.asdict(lf), "total": lf.total, "decode": dl.total}
                   for lf, dl in zip(layers, decode, strict=True)],
    }  # fmt: skip


# fvcore ------------------------------------------------------------------------------------------------------


class _AttentionRecorder(TorchFunctionMode):
    """Runs the model once and records, per attention call in order, the multiply-adds over attended pairs.

    fvcore traces a graph without tensor values, so its handles cannot read the masks; this eager pass can.
    SDPA calls record q's shape and MACs; the soft-cap path records attended entries of each masked score tensor.
    """

    def __init__(self) -> None:
        super().__init__()
        self.sdpa: list[tuple[list[int], int]] = []
        self.scores: list[int] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.scaled_dot_product_attention:
            self.sdpa.append(_sdpa_macs(*args, **kwargs))
        elif func is torch.Tensor.masked_fill and args[0].dim() == 4 and args[2] == -math.inf:
            self.scores.append(int(args[0].numel() - args[1].expand(args[0].shape).sum()))
        return func(*args, **kwargs)


def _sdpa_macs(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, **_) -> tuple[list[int], int]:
    *batch, tq, e = q.shape
    tk, ev = k.shape[-2], v.shape[-1]
    if attn_mask is None:
        attn_mask = torch.ones(tq, tk, dtype=torch.bool).tril() if is_causal else torch.ones(tq, tk, dtype=torch.bool)
    elif attn_mask.dtype != torch.bool:
        attn_mask = attn_mask > -math.inf
    pairs = int(attn_mask.expand(*batch, tq, tk).sum())
    return list(q.shape), pairs * (e + ev)


def fvcore_flops(model: torch.nn.Module, input_ids: torch.Tensor) -> dict[str, int]:
    """FLOPs per module name ('' is the total) of one forward pass, counted by fvcore (x2 for FLOPs per MAC)."""
    with warnings.catch_warnings():  # fvcore's import-time torch.jit.script calls warn of a deprecation
        warnings.simplefilter("ignore", DeprecationWarning)
        from fvcore.nn import FlopCountAnalysis
        from fvcore.nn.jit_handles import get_shape, matmul_flop_jit

    with torch.no_grad(), _AttentionRecorder() as rec:
        model(input_ids)
    sdpa, scores, n_attn_matmuls = iter(rec.sdpa), rec.scores, 0

    def sdpa_handle(inputs, outputs) -> int:
        shape, macs = next(sdpa)
        if get_shape(inputs[0]) != shape:
            raise RuntimeError(f"fvcore graph and eager pass disagree: query shape {get_shape(inputs[0])} vs {shape}")
        return macs

    def matmul_handle(inputs, outputs) -> int:
        """4-D matmuls are the soft-cap path's QK^T (even calls) and PV (odd calls); others as fvcore counts."""
        nonlocal n_attn_matmuls
        a, b = get_shape(inputs[0]), get_shape(inputs[1])
        if len(a) != 4 or len(b) != 4:
            return matmul_flop_jit(inputs, outputs)
        attended = scores[n_attn_matmuls // 2]
        inner = a[-1] if n_attn_matmuls % 2 == 0 else b[-1]
        n_attn_matmuls += 1
        return attended * inner

    analysis = FlopCountAnalysis(model, input_ids).set_op_handle(
        "aten::scaled_dot_product_attention", sdpa_handle, "aten::matmul", matmul_handle
    )
    analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    return {name: 2 * int(macs) for name, macs in analysis.by_module().items()}


# CLI ---------------------------------------------------------------------------------------------------------


def _fmt(flops: float) -> str:
    return f"{flops:.4g}"


def print_report(name: str, r: dict[str, Any]) -> None:
    print(f"{name}: FLOPs at context {r['context']:,} (2 per multiply-add; attention over attended pairs only)")
    print(
        f"per layer: prefill of {r['context']:,} tokens (pairs: query-key pairs per head), decode of 1 token after it"
    )
    rows = [[lay["layer"], lay["type"], lay["pairs"], _fmt(lay["projections"]), _fmt(lay["attention"]),
             _fmt(lay["mlp"]), _fmt(lay["total"]), _fmt(lay["decode"])] for lay in r["layers"]]  # fmt: skip
    rows.append(["lm head", "", "", "", "", "", _fmt(r["lm_head"]), _fmt(r["lm_head"] / r["context"])])
    print_table(["layer", "type", "pairs", "qkvo", "attention", "mlp", "prefill", "decode"], rows)
    print(f"forward (prefill) {_fmt(r['forward'])} = {_fmt(r['forward_per_token'])}/token; "
          f"training (3x) {_fmt(r['training'])} = {_fmt(r['training_per_token'])}/token; "
          f"decode 1 token at context {r['context']:,}: {_fmt(r['decode'])}")  # fmt: skip
    saving = 1 - r["forward"] / r["forward_all_global"]
    print(f"all layers global: forward {_fmt(r['forward_all_global'])} (the local layers save {saving:.1%})")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m analysis.flops", description=__doc__.splitlines()[0])
    add_preset_args(parser)
    parser.add_argument("--context", type=int, default=None, help="tokens per sequence (default: max_seq_len)")
    args = parser.parse_args(argv)
    if args.context is not None and args.context < 1:
        parser.error(f"--context must be >= 1 (got {args.context})")
    reports = {n: report(cfg, args.context or cfg.max_seq_len) for n, cfg in selected_presets(parser, args).items()}
    if args.json:
        print(json.dumps(next(iter(reports.values())) if len(reports) == 1 else reports, indent=2))
        return
    for name, r in reports.items():
        print_report(name, r)


if __name__ == "__main__":
    main()
