"""Named model configurations: the published Gemma 2/3 text decoders, Gemma 4's and OLMo 3's shapes, and small
ablation baselines.

Gemma values follow the reports and the `transformers` configuration defaults for each size. Gemma 2 uses the
report's 256,128-entry vocabulary (HF configs say 256,000), so that Table 2 of the report is reproduced exactly.
"""

from __future__ import annotations

from workbench.config import ModelConfig

_GEMMA3 = dict(
    mlp="geglu", norm="gemma_rmsnorm", norm_placement="sandwich", layer_pattern="5:1", attn_logit="qk_norm",
    rope_base_global=1_000_000.0, rope_base_local=10_000.0, tie_embeddings=True, embed_scale=True,
    head_dim=256, window=1024, vocab_size=262_208, max_seq_len=131_072, rope_scaling_global=8.0,
)  # fmt: skip
_GEMMA2 = dict(
    mlp="geglu", norm="gemma_rmsnorm", norm_placement="sandwich", layer_pattern="1:1", attn_logit="softcap",
    attn_softcap=50.0, final_softcap=30.0, rope_base_global=10_000.0, rope_base_local=10_000.0,
    tie_embeddings=True, embed_scale=True, head_dim=256, window=4096, vocab_size=256_128, max_seq_len=8192,
)  # fmt: skip
_SMALL_GEMMA3 = {k: v for k, v in _GEMMA3.items() if k not in ("window", "max_seq_len")}
_SMALL_GEMMA3.update(vocab_size=264, rope_scaling_global=1.0, head_dim=None)
# Gemma 4 (transformers' Gemma4TextConfig): plain-scale RMSNorm (weights start at 1), QK-norm with attention scale 1,
# an unscaled value norm, 5:1 with the last layer global, global layers with their own head width and proportional
# RoPE on a quarter of it, per-layer input embeddings and a per-layer output scalar
_GEMMA4 = dict(
    mlp="geglu", norm="rmsnorm", norm_placement="sandwich", layer_pattern="5:1+last_global", attn_logit="qk_norm",
    query_pre_attn_scalar=1.0, v_norm=True, layer_scalar=True, rope_base_global=1_000_000.0, rope_base_local=10_000.0,
    rope_fraction_global=0.25, rope_partial="proportional", tie_embeddings=True, embed_scale=True,
)  # fmt: skip
_SMALL_GEMMA4 = dict(_GEMMA4, vocab_size=264)
# OLMo 3 (transformers' Olmo3Config): 3 sliding-window layers then 1 full, post-norm "reordered" blocks
# (x + norm(f(x))), SwiGLU, plain RMSNorm, QK-norm over the whole q / k projection, no embedding scale, an untied
# head, RoPE base 500,000 on both layer types
_OLMO3 = dict(
    mlp="swiglu", norm="rmsnorm", norm_placement="reordered", layer_pattern="3:1", attn_logit="qk_norm",
    qk_norm_scope="projection", rope_base_global=500_000.0, rope_base_local=500_000.0, tie_embeddings=False,
    embed_scale=False, vocab_size=264,
)  # fmt: skip

PRESETS: dict[str, ModelConfig] = {
    "gemma3-1b": ModelConfig(**{**_GEMMA3, "vocab_size": 262_144, "max_seq_len": 32_768, "rope_scaling_global": 1.0,
                                "window": 512}, d_model=1152, n_layers=26, n_heads=4, n_kv_heads=1, mlp_hidden=6912),
    "gemma3-4b": ModelConfig(**_GEMMA3, d_model=2560, n_layers=34, n_heads=8, n_kv_heads=4, mlp_hidden=10240),
    "gemma3-12b": ModelConfig(**_GEMMA3, d_model=3840, n_layers=48, n_heads=16, n_kv_heads=8, mlp_hidden=15360),
    "gemma3-27b": ModelConfig(**{**_GEMMA3, "head_dim": 128}, d_model=5376, n_layers=62, n_heads=32, n_kv_heads=16,
                              mlp_hidden=21504, query_pre_attn_scalar=168),
    "gemma2-2b": ModelConfig(**_GEMMA2, d_model=2304, n_layers=26, n_heads=8, n_kv_heads=4, mlp_hidden=9216),
    "gemma2-9b": ModelConfig(**_GEMMA2, d_model=3584, n_layers=42, n_heads=16, n_kv_heads=8, mlp_hidden=14336),
    "gemma2-27b": ModelConfig(**{**_GEMMA2, "head_dim": 128}, d_model=4608, n_layers=46, n_heads=32, n_kv_heads=16,
                              mlp_hidden=36864, query_pre_attn_scalar=144),
    # Gemma4TextConfig()'s defaults in transformers 5.24, which its docstring calls "similar to google/gemma-4-e2b-it"
    # (the E2B: 30 layers, 5 local : 1 global, PLE of 256 per layer; no KV sharing, no K = V, no MoE by default)
    "gemma4-e2b": ModelConfig(**_GEMMA4, vocab_size=262_144, d_model=2304, n_layers=30, n_heads=8, n_kv_heads=4,
                              head_dim=256, head_dim_global=512, mlp_hidden=9216, window=512, max_seq_len=131_072,
                              ple_dim=256),
    # Gemma-4-shaped ablation baselines for CPU (byte vocabulary like `tiny` / `small`): the widths of those two,
    # global heads twice as wide, PLE of d_model / 8 per layer
    "gemma4-tiny": ModelConfig(**_SMALL_GEMMA4, d_model=128, n_layers=6, n_heads=4, n_kv_heads=2, head_dim_global=64,
                               mlp_hidden=384, window=64, max_seq_len=256, ple_dim=16),
    "gemma4-small": ModelConfig(**_SMALL_GEMMA4, d_model=256, n_layers=12, n_heads=4, n_kv_heads=2,
                                head_dim_global=128, mlp_hidden=1024, window=128, max_seq_len=512, ple_dim=32),
    # OLMo-3-shaped ablation baselines for CPU (byte vocabulary), the widths of `tiny` / `small`, 8 / 12 layers so
    # that the 3:1 pattern ends on a full layer
    "olmo3-tiny": ModelConfig(**_OLMO3, d_model=128, n_layers=8, n_heads=4, n_kv_heads=2, mlp_hidden=384, window=64,
                              max_seq_len=256),
    "olmo3-small": ModelConfig(**_OLMO3, d_model=256, n_layers=12, n_heads=4, n_kv_heads=2, mlp_hidden=1024,
                               window=128, max_seq_len=512),
    # Gemma-3-shaped ablation baselines for CPU: byte-level vocabulary (256 bytes + specials)
    "tiny": ModelConfig(**_SMALL_GEMMA3, d_model=128, n_layers=6, n_heads=4, n_kv_heads=2, mlp_hidden=384,
                        window=64, max_seq_len=256),
    "small": ModelConfig(**_SMALL_GEMMA3, d_model=256, n_layers=12, n_heads=4, n_kv_heads=2, mlp_hidden=1024,
                         window=128, max_seq_len=512),
    # GPU benchmark size (GPT-2-small class, 125M): 10 local + 2 global layers, byte vocabulary like `tiny`/`small`
    # so it trains on the offline corpora with no tokenizer; every parameter sits in the layers ablations vary.
    # head_dim 768 / 12 = 64 and widths in multiples of 64 suit flash/flex kernels and tensor cores.
    "base125m": ModelConfig(**_SMALL_GEMMA3, d_model=768, n_layers=12, n_heads=12, n_kv_heads=4, mlp_hidden=3840,
                            window=512, max_seq_len=2048),
    # Llama-style counterpart of `small`: pre-norm, SwiGLU, all global, no caps, no QK-norm, untied head
    "llama-small": ModelConfig(vocab_size=264, d_model=256, n_layers=12, n_heads=4, n_kv_heads=2, mlp_hidden=1024,
                               max_seq_len=512, mlp="swiglu", norm="rmsnorm", norm_placement="pre",
                               layer_pattern="global", attn_logit="none", rope_base_global=10_000.0,
                               tie_embeddings=False, embed_scale=False, window=128),
}  # fmt: skip


def list_presets() -> list[str]:
    return list(PRESETS)


def get_preset(name: str) -> ModelConfig:
    if name not in PRESETS:
        raise ValueError(f"preset: got {name!r}; allowed: {', '.join(PRESETS)}")
    return PRESETS[name]
