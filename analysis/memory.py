"""Weight and KV-cache memory of a config in each weight storage format: the Gemma 3 report's Table 3.

Weights: every 2-D parameter, embeddings included, costs `QuantFormat.matrix_bytes`; vectors (norm weights, biases)
stay in bf16, as quantisers leave them. The shapes come from the model built on the meta device, so every block
variant is counted as it is built. "+KV" adds the KV cache at `context` tokens, once for the config's own layer
pattern (hybrid) and once for the all-global counterfactual; `--measure` also allocates the hybrid cache and says
whether its bytes are the computed ones.
Usage: `python -m analysis.memory gemma3-27b [--context 32768 [131072 ...]] [--kv-dtype bfloat16] [--json]`,
`... --all`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping

from tabulate import tabulate

from analysis.cli import Parser
from analysis.kv_cache import DTYPES, kv_cache_bytes, kv_cache_bytes_all_global, measured_kv_cache_bytes
from analysis.presets_cli import add_preset_args, selected_presets
from workbench.accounting import meta_model
from workbench.config import ModelConfig
from workbench.quant.formats import FORMATS, QuantFormat, get_format

VECTOR_BYTES = 2  # bf16
GB = 10**9  # the report's Table 3 is in decimal GB
# the report's column titles, per storage format
TABLE3_COLUMNS = {"bf16": "Raw (bf16)", "int4": "Int4", "int4_block32": "Int4 (blocks=32)", "fp8": "SFP8"}
PARTS = ("weights", "+KV", "+KV all-global")


def parameter_shapes(cfg: ModelConfig) -> tuple[tuple[int, ...], ...]:
    """Shapes of the model's parameters (a tied embedding once), read from a meta-device build: no memory used."""
    return tuple(tuple(p.shape) for p in meta_model(cfg).parameters())


def weight_bytes(cfg: ModelConfig, fmt: str | QuantFormat) -> int:
    """Bytes to store the weights with every matrix in `fmt` and every vector in bf16."""
    fmt = get_format(fmt) if isinstance(fmt, str) else fmt
    return sum(
        fmt.matrix_bytes(*shape) if len(shape) == 2 else math.prod(shape) * VECTOR_BYTES
        for shape in parameter_shapes(cfg)
    )


def memory_table(
    cfgs: Mapping[str, ModelConfig], context: int = 32_768, kv_dtype: str = "bfloat16"
) -> list[dict[str, object]]:
    """Table 3 as rows: per config, the parts "weights", "+KV" (own pattern) and "+KV all-global".

    Each row has `preset`, `part`, `kv_bytes` and one column of total bytes per format in `FORMATS`.
    """
    rows: list[dict[str, object]] = []
    for name, cfg in cfgs.items():
        weights = {f: weight_bytes(cfg, f) for f in FORMATS}
        kv = (0, kv_cache_bytes(cfg, context, dtype=kv_dtype), kv_cache_bytes_all_global(cfg, context, dtype=kv_dtype))
        for part, extra in zip(PARTS, kv, strict=True):
            rows.append({"preset": name, "part": part, "kv_bytes": extra, **{f: w + extra for f, w in weights.items()}})
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = Parser(prog="python -m analysis.memory", description=__doc__.splitlines()[0])
    add_preset_args(parser)
    parser.add_argument("--context", type=int, nargs="+", default=[32_768], help="tokens in the KV cache (32768)")
    parser.add_argument("--kv-dtype", default="bfloat16", choices=list(DTYPES))
    parser.add_argument("--measure", action="store_true", help="also allocate each +KV cache and compare its bytes")
    args = parser.parse_args(argv)
    if min(args.context) < 1:
        parser.error(f"--context must be >= 1 (got {args.context})")
    presets = selected_presets(parser, args)
    tables = {context: memory_table(presets, context, args.kv_dtype) for context in args.context}
    if args.measure:
        for context, table in tables.items():
            for r in table:
                if r["part"] == "+KV":
                    measured = measured_kv_cache_bytes(presets[r["preset"]], context, dtype=args.kv_dtype)
                    r["kv_measured_equal"] = measured == r["kv_bytes"]
    if args.json:
        print(json.dumps(tables[args.context[0]] if len(tables) == 1 else tables, indent=2))
        return
    print(f"Memory in GB (10^9 bytes): weights, and weights + {args.kv_dtype} KV cache at each context")
    header = ["preset", "context", "part", "KV", *(TABLE3_COLUMNS.get(f, f) for f in FORMATS)]
    header += ["KV measured == computed"] if args.measure else []
    rows = []
    for context, table in tables.items():
        for r in table:
            if context == args.context[0] or r["part"] != "weights":  # the weights once
                row = [r["preset"], context, r["part"], *(f"{r[k] / GB:.2f}" for k in ["kv_bytes", *FORMATS])]
                rows.append(row + ([str(r.get("kv_measured_equal", ""))] if args.measure else []))
    print(tabulate(rows, header, intfmt=","))


if __name__ == "__main__":
    main()
