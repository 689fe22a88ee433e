"""`workbench.accounting` against independent numbers: built tensors, allocated caches, fvcore, closed forms by hand.

Every registered attention, MLP, norm and position kind, and every preset (its structure at CPU widths), is
checked against a real model by `check_accounting`; the full-size presets against the closed forms below, which
are what analysis/ computed before the model owned its accounting and now live only here, as oracles.
"""

import pytest
import torch
from torch import nn

from tests.workbench.accounting_checks import check_accounting, fvcore_flops
from workbench import build_model, get_preset, list_presets
from workbench.accounting import (
    forward_flops,
    kv_bytes_read_per_token,
    kv_cache_bytes,
    param_counts,
    training_flops,
)
from workbench.config import ModelConfig
from workbench.registry import ATTENTION, MLP, NORM, POSITION
from workbench.training.module import LMModule

# 3 layers (local, local, global) with a window of 4, at widths a CPU builds and fvcore traces in a blink
BASE = get_preset("tiny").replace(d_model=32, n_layers=3, n_heads=4, n_kv_heads=2, mlp_hidden=48, layer_pattern="2:1",
                                  window=4, max_seq_len=64, mla_latent_dim=12, mla_rope_dim=4)  # fmt: skip
REGISTRIES = {"attention": ATTENTION, "mlp": MLP, "norm": NORM, "position": POSITION}
KINDS = [{field: name} for field, registry in REGISTRIES.items() for name in registry.names()]
COMBINATIONS = [
    {"attention_global": "mla"},
    {"attention": "mla", "attn_logit": "softcap+qk_norm", "final_softcap": 30.0},
    {"norm": "layernorm", "bias": True, "attention": "mla"},
    {"norm_placement": "post", "attn_logit": "softcap"},
    {"norm_placement": "pre", "tie_embeddings": False, "attn_logit": "none", "head_dim": 12, "n_kv_heads": 1},
]


@pytest.mark.parametrize("kind", KINDS + COMBINATIONS, ids=str)
@pytest.mark.parametrize("tokens", [11, 16], ids=["masked", "blocked"])  # 16 = 4 windows: the O(T W) local path
def test_every_registered_kind_is_counted_as_built(kind, tokens):
    cfg = BASE.replace(**kind)
    check_accounting(cfg, build_model(cfg), tokens=tokens)


def cpu_sized(cfg: ModelConfig) -> ModelConfig:
    """A preset's structure (kinds, pattern, norms, caps, tying, scalars) at widths a CPU builds in milliseconds."""
    return cfg.replace(vocab_size=96, d_model=32, head_dim=8, mlp_hidden=48, n_layers=min(cfg.n_layers, 7), window=4,
                       max_seq_len=64)  # fmt: skip


@pytest.mark.parametrize("name", list_presets())
def test_every_preset_structure_is_counted_as_built(name):
    cfg = cpu_sized(get_preset(name))
    check_accounting(cfg, build_model(cfg))


class PrefillThenDecode(nn.Module):
    """Prefill all but the last token into a cache, then decode the last one: fvcore counts both passes (both
    outputs are returned, so that the trace keeps the prefill's computation)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        cache = self.model.new_cache(ids.shape[0], ids.shape[1])
        prefill = self.model(ids[:, :-1], cache)
        return torch.cat((prefill, self.model(ids[:, -1:], cache)), dim=1)


@pytest.mark.parametrize("kind", [{}, {"attention": "mla"}, {"attn_logit": "softcap"}], ids=str)
@pytest.mark.parametrize("context", [2, 9])  # inside and past the window of 4
def test_decode_flops_equal_fvcore(kind, context):
    cfg = BASE.replace(**kind)
    model = build_model(cfg).eval()
    ids = torch.randint(0, cfg.vocab_size, (2, context + 1))
    decode = fvcore_flops(PrefillThenDecode(model), ids)[""] - fvcore_flops(model, ids[:, :-1])[""]
    assert decode == 2 * forward_flops(cfg, 1, start=context)


@pytest.mark.parametrize("kind", [{}, {"attention": "mla"}, {"attention_global": "mla"}], ids=str)
@pytest.mark.parametrize("context", [0, 2, 9])
def test_kv_bytes_read_per_token_equal_a_cache_of_what_the_step_sees(kind, context):
    """A decoded token attends its own key and `context` cached ones, at most `window` on a local layer: what a
    cache allocated for context + 1 tokens holds."""
    cfg = BASE.replace(**kind)
    cache = build_model(cfg).new_cache(1, context + 1, dtype=torch.bfloat16)
    assert kv_bytes_read_per_token(cfg, context) == cache.nbytes


def test_kv_bytes_read_per_token_by_hand():
    # gemma3-1b: 1 KV head of 256 (K and V, bf16: 1024 bytes per token); 22 local layers read the 512 window
    # tokens, 4 global layers all 32,768 cached tokens and the new one
    assert kv_bytes_read_per_token(get_preset("gemma3-1b"), 32_768) == 1024 * (22 * 512 + 4 * 32_769)
    assert kv_bytes_read_per_token(get_preset("gemma3-1b"), 32_768, dtype="float32") == 2 * 1024 * (
        22 * 512 + 4 * 32_769
    )


@pytest.mark.parametrize("pattern", ["global", "5:1", "local"])
def test_mfu_flops_equal_three_times_fvcore_at_grid_cpu_shape(pattern):
    """MFU's FLOPs per batch (D3: once Lightning's count, blind to causality and windows) are the attended-pairs
    count: 3 x fvcore's forward, exactly, for the all-global, 5:1 and all-local arms of the CPU grid."""
    cfg = get_preset("small").replace(d_model=128, mlp_hidden=512, window=64, max_seq_len=256, layer_pattern=pattern)
    module = LMModule(cfg, optim_cfg={})
    module.set_flops_per_batch(batch_size=2, seq_len=256)
    counted = fvcore_flops(module.model.eval(), torch.randint(0, cfg.vocab_size, (2, 256)))[""]
    assert module.flops_per_batch == 3 * counted == 2 * training_flops(cfg, 256)


def test_accounting_reads_the_window_set_window_leaves():
    model = build_model(BASE).set_window(2)
    assert model.new_cache(1, 30).nbytes == kv_cache_bytes(model.cfg, 30, dtype="float32")
    counted = fvcore_flops(model.eval(), torch.randint(0, BASE.vocab_size, (1, 11)))[""]
    assert counted == forward_flops(model.cfg, 11) < forward_flops(BASE, 11)


class CausalAttention(nn.Module):
    def __init__(self, mask: str) -> None:
        super().__init__()
        self.mask = mask

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mask == "is_causal":
            return torch.nn.functional.scaled_dot_product_attention(x, x, x, is_causal=True)
        t = x.shape[-2]
        additive = torch.full((t, t), float("-inf")).triu(1)
        return torch.nn.functional.scaled_dot_product_attention(x, x, x, attn_mask=additive)


@pytest.mark.parametrize("mask", ["is_causal", "additive"])
def test_fvcore_sdpa_handle_reads_causal_and_float_masks(mask):
    x = torch.randn(1, 2, 5, 4)  # batch 1, 2 heads, 5 tokens, head_dim 4: 15 pairs per head
    assert fvcore_flops(CausalAttention(mask), x)[""] == 2 * 2 * 15 * (4 + 4)


# full-size presets against closed forms (GQA attention and no biases, as every preset has) ----------------------
def closed_form_params(cfg: ModelConfig) -> dict[str, int]:
    d, hd, h, kv, f = cfg.d_model, cfg.resolved_head_dim, cfg.n_heads, cfg.n_kv_heads, cfg.mlp_hidden
    norm = 2 * d if cfg.norm == "layernorm" and cfg.bias else d
    attention = d * hd * (2 * h + 2 * kv) + (2 * hd if cfg.qk_norm else 0)
    mlp = (3 if cfg.mlp in ("geglu", "swiglu") else 2) * d * f
    norms = {"pre": 2, "post": 2, "sandwich": 4}[cfg.norm_placement] * norm
    non_embedding = cfg.n_layers * (attention + mlp + norms) + (0 if cfg.norm_placement == "post" else norm)
    embedding = cfg.vocab_size * d * (1 if cfg.tie_embeddings else 2)
    return {"embedding": embedding, "non_embedding": non_embedding, "total": embedding + non_embedding}


def closed_form_pairs(tokens: int, window: int | None, start: int = 0) -> int:
    keys = [min(i + 1, window) if window else i + 1 for i in range(start, start + tokens)]
    return sum(keys)


def closed_form_flops(cfg: ModelConfig, tokens: int, start: int = 0) -> int:
    d, hd, h, kv, f = cfg.d_model, cfg.resolved_head_dim, cfg.n_heads, cfg.n_kv_heads, cfg.mlp_hidden
    dense = 2 * tokens * (d * hd * (2 * h + 2 * kv) + (3 if cfg.mlp in ("geglu", "swiglu") else 2) * d * f)
    windows = [cfg.window if t == "local" else None for t in cfg.layer_types]
    attention = sum(2 * 2 * hd * h * closed_form_pairs(tokens, w, start) for w in windows)
    return cfg.n_layers * dense + attention + 2 * tokens * d * cfg.vocab_size


def closed_form_kv_bytes(cfg: ModelConfig, context: int) -> int:
    per_token = 2 * cfg.n_kv_heads * cfg.resolved_head_dim * 2  # K and V in bf16
    return sum(per_token * (min(context, cfg.window) if t == "local" else context) for t in cfg.layer_types)


@pytest.mark.parametrize("name", list_presets())
def test_full_size_presets_equal_closed_forms(name):
    cfg = get_preset(name)
    assert param_counts(cfg) == closed_form_params(cfg)
    assert kv_cache_bytes(cfg, 32_768) == closed_form_kv_bytes(cfg, 32_768)
    assert forward_flops(cfg, 2048) == closed_form_flops(cfg, 2048)
    assert forward_flops(cfg, 1, start=5000) == closed_form_flops(cfg, 1, start=5000)


def test_bad_dtype_and_context():
    with pytest.raises(ValueError, match="dtype: got 'int3'"):
        kv_cache_bytes(BASE, 10, dtype="int3")
    with pytest.raises(ValueError, match="context_len and batch_size: got 0, 1"):
        kv_cache_bytes(BASE, 0)
