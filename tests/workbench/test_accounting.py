"""`workbench.accounting` against independent numbers: built tensors, allocated caches, fvcore, closed forms by hand.

Every registered attention, MLP, norm and position kind, and every preset (its structure at CPU widths), is
checked against a real model by `check_accounting`; the full-size presets against the closed forms below, which
are what analysis/ computed before the model owned its accounting and now live only here, as oracles.
"""

import pytest
import torch
from torch import nn

from tests.tiers import slow_unless, tiered
from tests.workbench.accounting_checks import check_accounting, fvcore_flops
from workbench import build_model, get_preset, list_presets
from workbench.accounting import (
    forward_flops,
    generation_flops,
    kv_bytes_read_per_token,
    kv_cache_bytes,
    param_counts,
    training_flops,
)
from workbench.config import ModelConfig
from workbench.distill import Distiller
from workbench.generate import generate
from workbench.on_policy import OnPolicy
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
    # Gemma 4's knobs: per-type heads and RoPE, K = V, PLE, MoE, KV sharing with the double-wide MLP
    {
        "head_dim_global": 12,
        "n_kv_heads_global": 1,
        "rope_fraction_global": 0.5,
        "rope_partial": "proportional",
        "v_norm": True,
        "query_pre_attn_scalar": 1.0,
    },
    {"k_eq_v_global": True, "v_norm": True, "ple_dim": 4, "layer_scalar": True, "norm": "rmsnorm"},
    {"moe_experts": 3, "moe_top_k": 2, "moe_hidden": 16},
    {
        "layer_pattern": "1:1",
        "n_layers": 4,
        "kv_shared_layers": 2,
        "double_wide_mlp": True,
        "k_eq_v_global": True,
        "ple_dim": 4,
        "moe_experts": 2,
        "moe_top_k": 1,
    },
    # the 2025-26 knobs: sinks (a parameter per head, no FLOPs or cache), gates (rows of q_proj), projection QK-norm
    {"attn_sinks": True, "attn_gate": "elementwise", "qk_norm_scope": "projection", "norm_placement": "reordered"},
    {"attn_sinks": True, "attn_logit": "softcap", "attn_gate": "headwise", "k_eq_v_global": True},
]


# 16 tokens = 4 windows: the O(T W) local path; 11: the masked one. The fast tier counts every kind on the blocked
# path and the plain model on both.
@pytest.mark.parametrize(
    ("tokens", "kind"),
    [pytest.param(tokens, kind, id=f"{path}-{kind}", marks=slow_unless(tokens == 16 or kind == KINDS[0]))
     for tokens, path in ((11, "masked"), (16, "blocked")) for kind in KINDS + COMBINATIONS],
)  # fmt: skip
def test_every_registered_kind_is_counted_as_built(kind, tokens):
    cfg = BASE.replace(**kind)
    check_accounting(cfg, build_model(cfg), tokens=tokens)


def cpu_sized(cfg: ModelConfig) -> ModelConfig:
    """A preset's structure (kinds, pattern, norms, caps, tying, scalars) at widths a CPU builds in milliseconds."""
    return cfg.replace(vocab_size=96, d_model=32, head_dim=8, mlp_hidden=48, n_layers=min(cfg.n_layers, 7), window=4,
                       max_seq_len=64)  # fmt: skip


# the fast tier's: one preset of each family
@pytest.mark.parametrize("name", tiered(list_presets(), ("tiny", "gemma2-2b", "gemma3-1b", "gemma4-e2b", "olmo3-tiny")))
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


SHARED = {"layer_pattern": "1:1", "n_layers": 4, "kv_shared_layers": 2, "k_eq_v_global": True, "ple_dim": 4}


# inside and past the window of 4; the fast tier's: past it, the plain model and KV sharing
@pytest.mark.parametrize(
    ("context", "kind"),
    [pytest.param(context, kind, id=f"{context}-{kind}", marks=slow_unless(context == 9 and kind in ({}, SHARED)))
     for context in (2, 9) for kind in ({}, {"attention": "mla"}, {"attn_logit": "softcap"}, SHARED)],
)  # fmt: skip
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


@pytest.mark.parametrize("context", [0, 2, 9])
def test_kv_shared_layers_read_the_cache_of_their_source(context):
    """A KV-shared layer caches nothing but attends its source layer's keys and values: the step reads what the
    same model without sharing would cache, and its cache holds less."""
    cfg = BASE.replace(**SHARED)
    unshared = cfg.replace(kv_shared_layers=0)
    cache = build_model(unshared).new_cache(1, context + 1, dtype=torch.bfloat16)
    assert kv_bytes_read_per_token(cfg, context) == cache.nbytes == kv_bytes_read_per_token(unshared, context)
    assert build_model(cfg).new_cache(1, context + 1, dtype=torch.bfloat16).nbytes < cache.nbytes


def test_kv_bytes_read_per_token_by_hand():
    # gemma3-1b: 1 KV head of 256 (K and V, bf16: 1024 bytes per token); 22 local layers read the 512 window
    # tokens, 4 global layers all 32,768 cached tokens and the new one
    assert kv_bytes_read_per_token(get_preset("gemma3-1b"), 32_768) == 1024 * (22 * 512 + 4 * 32_769)
    assert kv_bytes_read_per_token(get_preset("gemma3-1b"), 32_768, dtype="float32") == 2 * 1024 * (
        22 * 512 + 4 * 32_769
    )


@pytest.mark.parametrize("pattern", tiered(["global", "5:1", "local"], ["5:1"]))  # fast: both kinds of layer
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
# Per layer i of type t: head width hd_t, KV heads kv_t; a KV-shared layer has q and o only (and q's norm), a K = V
# layer no v; the MLP is twice as wide on shared layers with double_wide_mlp; PLE adds a gate (d x P), a projection
# (P x d) and a norm per layer, and a table (V_ple x L P), a projection (d x L P) and a norm (P) per model; MoE adds
# a router (d x E, a d scale, an E scale), E experts of 3 d I and three norms per layer. The per-layer table counts
# as non-embedding: `accounting.EMBEDDING` names the token embedding and the head only. An output gate adds 1
# (headwise) or hd (elementwise) rows per query head to q; sinks a parameter per query head; QK-norm over the
# projection norms h hd (q) and kv hd (k) values instead of hd each.
def _layer_shape(cfg: ModelConfig, i: int) -> tuple[int, int, bool, bool]:
    t = cfg.layer_types[i]
    hd = cfg.head_dim_global if t == "global" and cfg.head_dim_global else cfg.resolved_head_dim
    kv = cfg.n_kv_heads_global if t == "global" and cfg.n_kv_heads_global else cfg.n_kv_heads
    return hd, kv, i >= cfg.n_layers - cfg.kv_shared_layers, t == "global" and cfg.k_eq_v_global


def _layer_matrices(cfg: ModelConfig, i: int) -> int:
    """Parameters of the matrices one token runs through in layer i (experts: the k it is routed to)."""
    d, h, P, f = cfg.d_model, cfg.n_heads, cfg.ple_dim, cfg.mlp_hidden
    hd, kv, shared, k_eq_v = _layer_shape(cfg, i)
    gate = {"none": 0, "headwise": 1, "elementwise": hd}[cfg.attn_gate]
    attention = 2 * d * h * hd + d * h * gate + (0 if shared else d * kv * hd * (1 if k_eq_v else 2))
    mlp = (3 if cfg.mlp in ("geglu", "swiglu") else 2) * d * f * (2 if shared and cfg.double_wide_mlp else 1)
    moe = d * cfg.moe_experts + cfg.moe_top_k * 3 * d * (cfg.moe_hidden or f) if cfg.moe_experts else 0
    return attention + mlp + 2 * d * P + moe


def closed_form_params(cfg: ModelConfig) -> dict[str, int]:
    d, f, E, P = cfg.d_model, cfg.mlp_hidden, cfg.moe_experts, cfg.ple_dim
    norm = 2 * d if cfg.norm == "layernorm" and cfg.bias else d
    norms = {"pre": 2, "post": 2, "sandwich": 4, "reordered": 2}[cfg.norm_placement] * norm
    non_embedding = 0 if cfg.norm_placement == "post" else norm
    for i in range(cfg.n_layers):
        hd, kv, shared, _ = _layer_shape(cfg, i)
        q_norm, k_norm = (cfg.n_heads * hd, kv * hd) if cfg.qk_norm_scope == "projection" else (hd, hd)
        qk_norms = q_norm + (0 if shared else k_norm) if cfg.qk_norm else 0
        qk_norms += cfg.n_heads if cfg.attn_sinks else 0
        all_experts = E * 3 * d * (cfg.moe_hidden or f) - cfg.moe_top_k * 3 * d * (cfg.moe_hidden or f)
        moe = all_experts + d + E + 3 * norm if E else 0
        non_embedding += _layer_matrices(cfg, i) + qk_norms + norms + moe + (norm if P else 0)
    if P:
        non_embedding += (cfg.ple_vocab_size or cfg.vocab_size) * cfg.n_layers * P + d * cfg.n_layers * P + P
    embedding = cfg.vocab_size * d * (1 if cfg.tie_embeddings else 2)
    return {"embedding": embedding, "non_embedding": non_embedding, "total": embedding + non_embedding}


def closed_form_pairs(tokens: int, window: int | None, start: int = 0) -> int:
    keys = [min(i + 1, window) if window else i + 1 for i in range(start, start + tokens)]
    return sum(keys)


def closed_form_flops(cfg: ModelConfig, tokens: int, start: int = 0) -> int:
    total = 2 * tokens * (cfg.d_model * cfg.vocab_size + cfg.d_model * cfg.n_layers * cfg.ple_dim)
    for i, t in enumerate(cfg.layer_types):
        hd = _layer_shape(cfg, i)[0]
        pairs = closed_form_pairs(tokens, cfg.window if t == "local" else None, start)
        total += 2 * tokens * _layer_matrices(cfg, i) + 2 * 2 * hd * cfg.n_heads * pairs
    return total


def closed_form_kv_bytes(cfg: ModelConfig, context: int) -> int:
    total = 0
    for i, t in enumerate(cfg.layer_types):
        hd, kv, shared, k_eq_v = _layer_shape(cfg, i)
        per_token = 0 if shared else (1 if k_eq_v else 2) * kv * hd * 2  # K and V (one tensor if K = V) in bf16
        total += per_token * (min(context, cfg.window) if t == "local" else context)
    return total


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


class Generate(nn.Module):
    """`generate` greedily (fvcore traces one path; sampling would cost the same): prefill, then cached decodes."""

    def __init__(self, model: nn.Module, new_tokens: int) -> None:
        super().__init__()
        self.model, self.new_tokens = model, new_tokens

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return generate(self.model, ids, self.new_tokens)


# decodes inside and past the window of 4, one sampled token (a prefill only); the fast tier's: the MLA one
@pytest.mark.parametrize(
    "kind, prompt, new",
    tiered([({}, 3, 9), ({"attention": "mla"}, 6, 5), (SHARED, 3, 1)], [({"attention": "mla"}, 6, 5)]),
    ids=str,
)
def test_generation_flops_equal_fvcore_of_generate(kind, prompt, new):
    cfg = BASE.replace(**kind)
    model = build_model(cfg).eval()
    counted = fvcore_flops(Generate(model, new), torch.randint(0, cfg.vocab_size, (2, prompt)))[""]
    assert counted == 2 * generation_flops(cfg, prompt, new)


@pytest.mark.slow  # fvcore traces a generate() of 7 steps and three forwards: seconds
def test_on_policy_mfu_flops_count_the_sampling_and_the_shorter_rows():
    """MFU's FLOPs per batch with on-policy distillation: round(mix x batch) rows are sampled (fvcore's count of
    generate) and trained on prompt + continuation - 1 tokens (3 x fvcore's forward); the others as usual."""
    on_policy = OnPolicy(mix=0.25, beta=0.5, prompt_len=3, new_tokens=7)
    module = LMModule(BASE, optim_cfg={}, distiller=Distiller(nn.Identity(), "none", 8, 0.0, on_policy=on_policy))
    module.set_flops_per_batch(batch_size=8, seq_len=16)
    model = module.model.eval()
    sampled = fvcore_flops(Generate(model, 7), torch.randint(0, BASE.vocab_size, (2, 3)))[""]
    trained = fvcore_flops(model, torch.randint(0, BASE.vocab_size, (2, 9)))[""]
    rest = fvcore_flops(model, torch.randint(0, BASE.vocab_size, (6, 16)))[""]
    assert module.flops_per_batch == sampled + 3 * trained + 3 * rest


@pytest.mark.parametrize(
    "knobs",
    [{"attn_gate": "headwise", "attn_sinks": True}, {"attn_gate": "elementwise", "kv_shared_layers": 4},
     {"qk_norm_scope": "projection", "norm_placement": "reordered", "n_kv_heads_global": 2, "head_dim_global": 512}],
    ids=str,
)  # fmt: skip
def test_attention_knobs_equal_closed_forms(knobs):
    cfg = get_preset("gemma3-1b").replace(**knobs)
    assert param_counts(cfg) == closed_form_params(cfg)
    assert kv_cache_bytes(cfg, 32_768) == closed_form_kv_bytes(cfg, 32_768)
    assert forward_flops(cfg, 2048) == closed_form_flops(cfg, 2048)
