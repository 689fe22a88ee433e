"""KV-cache bytes of each preset, from its model's own layers (`workbench.accounting`), and measured from a real cache.

Per layer: the attention kind's cached bytes per token x the tokens it caches, where a local layer caches
min(context, window) tokens and a global layer all of them. `bytes_read_per_token` is the decode cost: the KV
bytes one token decoded at `context` reads, every token it attends (a local layer at most `window` of them); a
layer that reuses an earlier layer's keys and values (KV sharing) reads them but caches nothing.
`layout` names the shapes: layers with a cache of their own per type (KV heads x head width, "K=V" where one
tensor is both) and the KV-shared layers.
Usage: `python -m analysis.kv_cache gemma3-4b gemma4-e2b --context 32768 131072 [--dtype bfloat16] [--batch 1]
[--json] [--measure]`.
"""

from __future__ import annotations

import json

import torch
from tabulate import tabulate

from analysis.cli import Parser
from analysis.presets_cli import add_preset_args, selected_presets
from workbench.accounting import DTYPES, kv_bytes_read_per_token, kv_cache_bytes, kv_cache_bytes_per_layer
from workbench.blocks.patterns import GLOBAL, LOCAL
from workbench.config import ModelConfig
from workbench.model import build_model


def kv_cache_bytes_all_global(cfg: ModelConfig, context_len: int, batch_size: int = 1, dtype: str = "bfloat16") -> int:
    """The counterfactual: the same model with every layer global."""
    return kv_cache_bytes(cfg.replace(layer_pattern=GLOBAL), context_len, batch_size, dtype)


def measured_kv_cache_bytes(cfg: ModelConfig, context_len: int, batch_size: int = 1, dtype: str = "bfloat16") -> int:
    """Allocate the model's real cache for `context_len` tokens and sum its tensors' bytes."""
    with torch.device("meta"):
        model = build_model(cfg)
    model.embed.to_empty(device="cpu")  # the cache takes its device from the embedding
    cache = model.new_cache(batch_size, context_len, dtype=DTYPES[dtype])
    return cache.nbytes


def layout(cfg: ModelConfig) -> str:
    """E.g. '24 L 4x256 + 4 G 2x512 K=V + 2 shared': the layers that cache, by type and KV shape, then the rest."""
    parts = []
    for layer_type, letter in ((LOCAL, "L"), (GLOBAL, "G")):
        own = sum(t == layer_type and not cfg.kv_shared(i) for i, t in enumerate(cfg.layer_types))
        if own:
            shape = f"{cfg.n_kv_heads_for(layer_type)}x{cfg.head_dim_for(layer_type)}"
            parts.append(f"{own} {letter} {shape}" + (" K=V" if cfg.k_eq_v_for(layer_type) else ""))
    return " + ".join(parts) + (f" + {cfg.kv_shared_layers} shared" if cfg.kv_shared_layers else "")


def report(cfg: ModelConfig, context_len: int, batch_size: int, dtype: str, measure: bool) -> dict[str, object]:
    out: dict[str, object] = {
        "context": context_len, "batch": batch_size, "dtype": dtype, "layout": layout(cfg),
        "bytes": kv_cache_bytes(cfg, context_len, batch_size, dtype),
        "bytes_all_global": kv_cache_bytes_all_global(cfg, context_len, batch_size, dtype),
        "bytes_per_layer": kv_cache_bytes_per_layer(cfg, context_len, batch_size, dtype),
        "bytes_read_per_token": kv_bytes_read_per_token(cfg, context_len, dtype),
    }  # fmt: skip
    if measure:
        out["bytes_measured"] = measured_kv_cache_bytes(cfg, context_len, batch_size, dtype)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = Parser(prog="python -m analysis.kv_cache", description=__doc__.splitlines()[0])
    add_preset_args(parser)
    parser.add_argument("--context", type=int, nargs="+", default=[32_768], help="tokens in the cache (default 32768)")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--dtype", default="bfloat16", choices=list(DTYPES))
    parser.add_argument("--measure", action="store_true", help="also allocate the real cache and sum its bytes")
    args = parser.parse_args(argv)
    if min(args.context) < 1 or args.batch < 1:
        parser.error(f"--context and --batch must be >= 1 (got {args.context}, {args.batch})")
    presets = selected_presets(parser, args)
    reports = {(n, c): report(cfg, c, args.batch, args.dtype, args.measure) for c in args.context
               for n, cfg in presets.items()}  # fmt: skip
    if args.json:
        by_preset = {n: [reports[n, c] for c in args.context] for n in presets}
        if len(args.context) == 1:
            by_preset = {n: r[0] for n, r in by_preset.items()}
        print(json.dumps(next(iter(by_preset.values())) if len(by_preset) == 1 else by_preset, indent=2))
        return
    gib = 2**30
    header = ["preset", "context", "layout", "bytes", "GiB", "all-global GiB", "saving", "read per token"]
    header += ["measured bytes", "measured == computed"] if args.measure else []
    rows = []
    for (name, context), r in reports.items():
        row = [name, context, r["layout"], r["bytes"], f"{r['bytes'] / gib:.3f}",
               f"{r['bytes_all_global'] / gib:.3f}", f"{1 - r['bytes'] / r['bytes_all_global']:.1%}",
               r["bytes_read_per_token"]]  # fmt: skip
        if args.measure:
            row += [r["bytes_measured"], str(r["bytes_measured"] == r["bytes"])]
        rows.append(row)
    print(f"KV cache, batch {args.batch}, {args.dtype}; all-global: every layer global, as it is built otherwise")
    print(tabulate(rows, header, intfmt=","))


if __name__ == "__main__":
    main()
