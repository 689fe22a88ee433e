"""KV-cache bytes computed from a `ModelConfig`, and measured from a real allocated cache.

Per layer: cached elements per token x cached tokens x bytes per element, where a local layer caches
min(context, window) tokens and a global layer all of them. Elements per token: 2 (K and V) x n_kv_heads x
head_dim for `mha`; latent + RoPE key width for `mla`.
Usage: `python -m analysis.kv_cache gemma3-27b --context 32768 [--dtype bfloat16] [--batch 1] [--json] [--measure]`.
"""

from __future__ import annotations

import argparse
import json

import torch

from analysis.presets_cli import add_preset_args, print_table, selected_presets
from workbench.blocks.patterns import GLOBAL, LOCAL
from workbench.config import ModelConfig

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "float8": torch.float8_e4m3fn}


def dtype_bytes(dtype: str) -> int:
    if dtype not in DTYPES:
        raise ValueError(f"dtype: got {dtype!r}; allowed: {', '.join(DTYPES)}")
    return DTYPES[dtype].itemsize


def cached_tokens(cfg: ModelConfig, layer_type: str, context_len: int, window: int | None = None) -> int:
    return min(context_len, window or cfg.window) if layer_type == LOCAL else context_len


def cached_elements_per_token(cfg: ModelConfig, kind: str) -> int:
    """Elements one token adds to one layer's cache for a registered attention `kind`."""
    if kind == "mha":
        return 2 * cfg.n_kv_heads * cfg.resolved_head_dim
    if kind == "mla":
        return cfg.mla_latent_dim + cfg.mla_rope_dim
    raise ValueError(f"attention: no KV-cache formula for {kind!r}; known: mha, mla")


def kv_cache_bytes_per_layer(
    cfg: ModelConfig, context_len: int, batch_size: int = 1, dtype: str = "bfloat16", window: int | None = None
) -> list[int]:
    scale = dtype_bytes(dtype) * batch_size
    return [
        cached_elements_per_token(cfg, cfg.attention_for(t)) * cached_tokens(cfg, t, context_len, window) * scale
        for t in cfg.layer_types
    ]


def kv_cache_bytes(
    cfg: ModelConfig, context_len: int, batch_size: int = 1, dtype: str = "bfloat16", window: int | None = None
) -> int:
    """Bytes of the KV cache for `batch_size` sequences of `context_len` tokens (window: override cfg.window)."""
    if context_len < 1 or batch_size < 1:
        raise ValueError(f"context_len and batch_size: got {context_len}, {batch_size}; allowed: values >= 1")
    return sum(kv_cache_bytes_per_layer(cfg, context_len, batch_size, dtype, window))


def kv_cache_bytes_all_global(cfg: ModelConfig, context_len: int, batch_size: int = 1, dtype: str = "bfloat16") -> int:
    """The counterfactual: the same model with every layer global."""
    return kv_cache_bytes(cfg.replace(layer_pattern=GLOBAL), context_len, batch_size, dtype)


def measured_kv_cache_bytes(cfg: ModelConfig, context_len: int, batch_size: int = 1, dtype: str = "bfloat16") -> int:
    """Allocate the model's real cache for `context_len` tokens and sum its tensors' bytes."""
    from workbench.model import build_model

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
    header = ["preset", "bytes", "GiB", "all-global bytes", "all-global GiB", "saving"]
    header += ["measured bytes", "measured == computed"] if args.measure else []
    rows = []
    for name, r in reports.items():
        row = [name, r["bytes"], f"{r['bytes'] / gib:.3f}", r["bytes_all_global"],
               f"{r['bytes_all_global'] / gib:.3f}", f"{1 - r['bytes'] / r['bytes_all_global']:.1%}"]  # fmt: skip
        if args.measure:
            row += [r["bytes_measured"], str(r["bytes_measured"] == r["bytes"])]
        rows.append(row)
    print(f"KV cache at context {args.context:,}, batch {args.batch}, {args.dtype}")
    print_table(header, rows)


if __name__ == "__main__":
    main()
