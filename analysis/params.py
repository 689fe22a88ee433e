"""Parameter counts computed from a `ModelConfig` alone (no model is built).

`embedding` counts the token embedding, plus the output head when it is not tied; `non_embedding` is the rest.
Usage: `python -m analysis.params gemma3-27b [--json]`, `python -m analysis.params --all`.
"""

from __future__ import annotations

import argparse
import json

from analysis.presets_cli import add_preset_args, print_table, selected_presets
from workbench.blocks.mlp import GATED_MLPS
from workbench.config import ModelConfig


def norm_params(cfg: ModelConfig, dim: int) -> int:
    return 2 * dim if cfg.norm == "layernorm" and cfg.bias else dim


def attention_params(cfg: ModelConfig, kind: str | None = None) -> int:
    """Parameters of one attention block of a registered `kind` ('mha' or 'mla'; default: cfg.attention)."""
    kind = kind or cfg.attention
    d, hd, h = cfg.d_model, cfg.resolved_head_dim, cfg.n_heads
    qk_norm = 2 * norm_params(cfg, hd) if cfg.qk_norm else 0
    if kind == "mha":
        outs = hd * (h + 2 * cfg.n_kv_heads) + d  # output widths of q, k, v, o
        return d * hd * (h + 2 * cfg.n_kv_heads) + h * hd * d + (outs if cfg.bias else 0) + qk_norm
    if kind == "mla":
        latent, rope = cfg.mla_latent_dim, cfg.mla_rope_dim
        weights = d * h * (hd + rope) + d * latent + d * rope + 2 * latent * h * hd + h * hd * d
        outs = h * (hd + rope) + latent + rope + 2 * h * hd + d
        return weights + (outs if cfg.bias else 0) + norm_params(cfg, latent) + qk_norm
    raise ValueError(f"attention: no parameter formula for {kind!r}; known: mha, mla")


def mlp_params(cfg: ModelConfig) -> int:
    n_in = 2 if cfg.mlp in GATED_MLPS else 1
    biases = (n_in * cfg.mlp_hidden + cfg.d_model) if cfg.bias else 0
    return (n_in + 1) * cfg.d_model * cfg.mlp_hidden + biases


def layer_params(cfg: ModelConfig, layer_type: str) -> int:
    norms_per_layer = {"pre": 2, "post": 2, "sandwich": 4}[cfg.norm_placement]
    attention = attention_params(cfg, cfg.attention_for(layer_type))
    return attention + mlp_params(cfg) + norms_per_layer * norm_params(cfg, cfg.d_model)


def count_params(cfg: ModelConfig) -> dict[str, int]:
    embedding = cfg.vocab_size * cfg.d_model * (1 if cfg.tie_embeddings else 2)
    final_norm = 0 if cfg.norm_placement == "post" else norm_params(cfg, cfg.d_model)
    non_embedding = sum(layer_params(cfg, t) for t in cfg.layer_types) + final_norm
    return {"embedding": embedding, "non_embedding": non_embedding, "total": embedding + non_embedding}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m analysis.params", description=__doc__.splitlines()[0])
    add_preset_args(parser)
    args = parser.parse_args(argv)
    counts = {name: count_params(cfg) for name, cfg in selected_presets(parser, args).items()}
    if args.json:
        print(json.dumps(next(iter(counts.values())) if len(counts) == 1 else counts, indent=2))
        return
    rows = [[name, c["embedding"], c["non_embedding"], c["total"], f"{c['non_embedding'] / 1e6:,.0f}M"]
            for name, c in counts.items()]  # fmt: skip
    print_table(["preset", "embedding", "non-embedding", "total", "non-emb (M)"], rows)


if __name__ == "__main__":
    main()
