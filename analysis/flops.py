"""Window-aware FLOPs of each preset, per layer, from its model's own blocks (`workbench.accounting`).

The convention is the project's one, stated in `workbench.accounting`: matmuls at 2 FLOPs per multiply-add,
attention over the (query, key) pairs actually attended (Σ_i min(i+1, W) on a local layer), the LM head at
every position, training = forward + backward = 3 x forward. Per layer, `projections` are the attention
block's dense matmuls and `attention` its QK^T and PV over the attended pairs.
Usage: `python -m analysis.flops gemma3-27b --context 32768 [--json]`.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

from tabulate import tabulate

from analysis.cli import Parser
from analysis.presets_cli import add_preset_args, selected_presets
from workbench.accounting import forward_flops, meta_model, training_flops
from workbench.blocks.attention import attended_pairs
from workbench.config import ModelConfig


@dataclass(frozen=True)
class LayerFlops:
    """Forward FLOPs of one layer over a pass of `tokens` new tokens."""

    layer: int
    type: str
    tokens: int
    pairs: int  # (query, key) pairs attended, per head
    projections: int  # q, k, v, o (and what else the attention kind projects)
    attention: int  # QK^T and PV over the attended pairs
    mlp: int

    @property
    def total(self) -> int:
        return self.projections + self.attention + self.mlp


def layer_flops(cfg: ModelConfig, tokens: int, start: int = 0) -> list[LayerFlops]:
    """Per-layer forward FLOPs for `tokens` new tokens after `start` cached ones (prefill: start=0)."""
    out = []
    for i, block in enumerate(meta_model(cfg).blocks):
        attention = block.attn.pair_flops(tokens, start)
        projections = block.attn.flops(tokens, start) - attention
        pairs = attended_pairs(tokens, block.attn.window, start)
        out.append(LayerFlops(i, block.layer_type, tokens, pairs, projections, attention, block.mlp.flops(tokens)))
    return out


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
        "training": training_flops(cfg, context),
        "training_per_token": training_flops(cfg, context) / context,
        "decode": decode_flops(cfg, context),
        "forward_all_global": forward_flops(cfg.replace(layer_pattern="global"), context),
        "lm_head": fwd - sum(lf.total for lf in layers),
        "layers": [{**dataclasses.asdict(lf), "total": lf.total, "decode": dl.total}
                   for lf, dl in zip(layers, decode, strict=True)],
    }  # fmt: skip


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
    print(tabulate(rows, ["layer", "type", "pairs", "qkvo", "attention", "mlp", "prefill", "decode"], intfmt=","))
    print(f"forward (prefill) {_fmt(r['forward'])} = {_fmt(r['forward_per_token'])}/token; "
          f"training (3x) {_fmt(r['training'])} = {_fmt(r['training_per_token'])}/token; "
          f"decode 1 token at context {r['context']:,}: {_fmt(r['decode'])}")  # fmt: skip
    saving = 1 - r["forward"] / r["forward_all_global"]
    print(f"all layers global: forward {_fmt(r['forward_all_global'])} (the local layers save {saving:.1%})")


def main(argv: list[str] | None = None) -> None:
    parser = Parser(prog="python -m analysis.flops", description=__doc__.splitlines()[0])
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
