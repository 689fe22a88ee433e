"""KV-cache bytes of each preset, from its model's own layers (`workbench.accounting`), and measured from a real cache.

Per layer: the attention kind's cached bytes per token x the tokens it caches, where a local layer caches
min(context, window) tokens and a global layer all of them. `bytes_read_per_token` is the decode cost: the KV
bytes one token decoded at `context` reads, every token it attends (a local layer at most `window` of them).
Usage: `python -m analysis.kv_cache gemma3-27b --context 32768 [--dtype bfloat16] [--batch 1] [--json] [--measure]`.
"""

from __future__ import annotations

import argparse
import json

import torch

from analysis.presets_cli import add_preset_args, print_table, selected_presets
from workbench.accounting import DTYPES, kv_bytes_read_per_token, kv_cache_bytes, kv_cache_bytes_per_layer
from workbench.blocks.patterns import GLOBAL
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


def report(cfg: ModelConfig, context_len: int, batch_size: int, dtype: str, measure: bool) -> dict[str, object]:
    out: dict[str, object] = {
        "context": context_len, "batch": batch_size, "dtype": dtype,
        "bytes": kv_cache_bytes(cfg, context_len, batch_size, dtype),
        "bytes_all_global": kv_cache_bytes_all_global(cfg, context_len, batch_size, dtype),
        "bytes_per_layer": kv_cache_bytes_per_layer(cfg, context_len, batch_size, dtype),
        "bytes_read_per_token": kv_bytes_read_per_token(cfg, context_len, dtype),
    }  # fmt: skip
    if measure:
        out["bytes_measured"] = measured_kv_cache_bytes(cfg, context_len, batch_size, dtype)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m analysis.kv_cache", description=__doc__.splitlines()[0])
    add_preset_args(parser)
    parser.add_argument("--context", type=int, default=32_768, help="tokens in the cache (default 32768)")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--dtype", default="bfloat16", choices=list(DTYPES))
    parser.add_argument("--measure", action="store_true", help="also allocate the real cache and sum its bytes")
    args = parser.parse_args(argv)
    if args.context < 1 or args.batch < 1:
        parser.error(f"--context and --batch must be >= 1 (got {args.context}, {args.batch})")
    reports = {n: report(cfg, args.context, args.batch, args.dtype, args.measure)
               for n, cfg in selected_presets(parser, args).items()}  # fmt: skip
    if args.json:
        print(json.dumps(next(iter(reports.values())) if len(reports) == 1 else reports, indent=2))
        return
    gib = 2**30
    header = ["preset", "bytes", "GiB", "all-global bytes", "all-global GiB", "saving", "read per token"]
    header += ["measured bytes", "measured == computed"] if args.measure else []
    rows = []
    for name, r in reports.items():
        row = [name, r["bytes"], f"{r['bytes'] / gib:.3f}", r["bytes_all_global"],
               f"{r['bytes_all_global'] / gib:.3f}", f"{1 - r['bytes'] / r['bytes_all_global']:.1%}",
               r["bytes_read_per_token"]]  # fmt: skip
        if args.measure:
            row += [r["bytes_measured"], str(r["bytes_measured"] == r["bytes"])]
        rows.append(row)
    print(f"KV cache at context {args.context:,}, batch {args.batch}, {args.dtype}")
    print_table(header, rows)


if __name__ == "__main__":
    main()
