"""The 2025-26 attention knobs against their references, in float64 at the module level with random weights:
sinks (`GptOssAttention`, sliding and full), the elementwise output gate (`Qwen3NextAttention`), QK-norm over the
projection (`Olmo3Attention`); and decoding with a cache equal to the full forward for each knob."""

import pytest
import torch
from transformers import GptOssConfig, Olmo3Config, Qwen3NextConfig
from transformers.models.gpt_oss.modeling_gpt_oss import GptOssAttention, GptOssRotaryEmbedding
from transformers.models.olmo3.modeling_olmo3 import Olmo3Attention, Olmo3RotaryEmbedding
from transformers.models.qwen3_next.modeling_qwen3_next import Qwen3NextAttention, Qwen3NextRotaryEmbedding

from workbench import build_model, get_preset
from workbench.blocks.attention import attention_path
from workbench.config import ModelConfig
from workbench.registry import ATTENTION

D_MODEL, HEADS, KV_HEADS, HEAD_DIM, WINDOW = 32, 4, 2, 8, 4
# float64 reference vs float64 model: both round at ~1e-16 relative; outputs are O(1), sums over <= 64 terms
TOL = 64 * torch.finfo(torch.float64).eps
# Qwen3-Next's and OLMo 3's eager attention take the softmax in float32 whatever the input dtype: each probability
# is off by up to ~eps32 relative, so the output (a convex mix of values, then o_proj) by a few eps32 of its scale
TOL_FP32_SOFTMAX = 8 * torch.finfo(torch.float32).eps
BASE = get_preset("tiny").replace(d_model=D_MODEL, n_layers=2, n_heads=HEADS, n_kv_heads=KV_HEADS, head_dim=HEAD_DIM,
                                  mlp_hidden=48, layer_pattern=("local", "global"), window=WINDOW, max_seq_len=64,
                                  rope_base_local=10_000.0, rope_base_global=10_000.0)  # fmt: skip


def additive_mask(length: int, window: int | None) -> torch.Tensor:
    """(1, 1, T, T) float64: 0 where key j is visible from query i (i - W < j <= i), the dtype's minimum elsewhere."""
    i, j = torch.arange(length)[:, None], torch.arange(length)[None, :]
    visible = (j <= i) & ((j > i - window) if window is not None else True)
    zeros = torch.zeros(length, length, dtype=torch.float64)
    return zeros.masked_fill(~visible, torch.finfo(torch.float64).min)[None, None]


def ours(cfg: ModelConfig, local: bool) -> torch.nn.Module:
    torch.manual_seed(0)
    return ATTENTION.build("mha", cfg, local=local).double().eval()


@torch.no_grad()
def copy_projections(module: torch.nn.Module, hf: torch.nn.Module) -> None:
    """Our fused q/k/v rows (and biases) and o_proj from the reference's separate projections."""
    parts = (hf.q_proj, hf.k_proj, hf.v_proj)
    module.qkv_proj.weight.copy_(torch.cat([p.weight for p in parts]))
    if module.qkv_proj.bias is not None:
        module.qkv_proj.bias.copy_(torch.cat([p.bias for p in parts]))
        module.o_proj.bias.copy_(hf.o_proj.bias)
    module.o_proj.weight.copy_(hf.o_proj.weight)


def randomise(module: torch.nn.Module) -> None:
    torch.manual_seed(1)
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0, 0.3)


@pytest.mark.parametrize("local", [True, False], ids=["sliding", "full"])
@pytest.mark.parametrize("path", ["auto", "dense", "flex"])
@pytest.mark.parametrize("length", [11, 16])  # 16 = 4 windows: the blocked O(T W) local path under auto
def test_sinks_match_gpt_oss_attention(local, path, length):
    config = GptOssConfig(hidden_size=D_MODEL, num_attention_heads=HEADS, num_key_value_heads=KV_HEADS,
                          attn_implementation="eager",
                          head_dim=HEAD_DIM, sliding_window=WINDOW, num_hidden_layers=2, attention_bias=True,
                          layer_types=["sliding_attention", "full_attention"],
                          rope_parameters={"rope_type": "default", "rope_theta": 10_000.0})  # fmt: skip
    hf = GptOssAttention(config, layer_idx=0 if local else 1).double().eval()
    randomise(hf)
    module = ours(BASE.replace(attn_sinks=True, attn_logit="none", bias=True), local)
    copy_projections(module, hf)
    with torch.no_grad():
        module.sinks.copy_(hf.sinks)
    x = torch.randn(2, length, D_MODEL, dtype=torch.float64)
    positions = torch.arange(length)
    cos_sin = GptOssRotaryEmbedding(config).double()(x, positions[None])
    with torch.no_grad(), attention_path(path):
        expected = hf(x, cos_sin, additive_mask(length, WINDOW if local else None))[0]
        got = module(x, positions)
    assert (got - expected).abs().max() <= TOL * expected.abs().max()
    # the sinks matter: zeroing them changes the output by far more than the tolerance
    with torch.no_grad():
        module.sinks.fill_(-1e4)
        assert (module(x, positions) - expected).abs().max() > 1e3 * TOL


def qwen3_next_config(rope_fraction: float) -> Qwen3NextConfig:
    config = Qwen3NextConfig(hidden_size=D_MODEL, num_attention_heads=HEADS, num_key_value_heads=KV_HEADS,
                             attn_implementation="eager",
                             head_dim=HEAD_DIM, num_hidden_layers=1, layer_types=["full_attention"],
                             partial_rotary_factor=rope_fraction, rms_norm_eps=1e-6,
                             rope_parameters={"rope_type": "default", "rope_theta": 10_000.0,
                                              "partial_rotary_factor": rope_fraction})  # fmt: skip
    return config


@pytest.mark.parametrize("rope_fraction", [1.0, 0.25])  # Qwen3-Next rotates a quarter of each head by default
@pytest.mark.parametrize("path", ["auto", "dense"])
def test_elementwise_gate_matches_qwen3_next_attention(rope_fraction, path):
    config = qwen3_next_config(rope_fraction)
    hf = Qwen3NextAttention(config, layer_idx=0).double().eval()
    randomise(hf)
    cfg = BASE.replace(attn_gate="elementwise", layer_pattern="global", rope_fraction=rope_fraction)
    module = ours(cfg, local=False)
    copy_projections(module, hf)  # q_proj holds [query_h, gate_h] per head, as ours does: copied as it is
    with torch.no_grad():
        module.q_norm.weight.copy_(hf.q_norm.weight)
        module.k_norm.weight.copy_(hf.k_norm.weight)
    x = torch.randn(2, 13, D_MODEL, dtype=torch.float64)
    positions = torch.arange(13)
    cos_sin = Qwen3NextRotaryEmbedding(config).double()(x, positions[None])
    with torch.no_grad(), attention_path(path):
        expected = hf(x, cos_sin, additive_mask(13, None))[0]
        got = module(x, positions)
    assert (got - expected).abs().max() <= TOL_FP32_SOFTMAX * expected.abs().max()


@torch.no_grad()
def test_headwise_gate_is_elementwise_with_one_gate_per_head():
    """A headwise gate row copied to every dim of its head's elementwise gate computes the same function."""
    head = ours(BASE.replace(attn_gate="headwise"), local=True)
    elem = ours(BASE.replace(attn_gate="elementwise"), local=True)
    randomise(head)
    q_head = head.qkv_proj.weight[: HEADS * (HEAD_DIM + 1)].view(HEADS, HEAD_DIM + 1, D_MODEL)
    query, gate = q_head.split((HEAD_DIM, 1), dim=1)
    q_elem = torch.cat((query, gate.expand(HEADS, HEAD_DIM, D_MODEL)), dim=1).flatten(0, 1)
    elem.qkv_proj.weight.copy_(torch.cat((q_elem, head.qkv_proj.weight[HEADS * (HEAD_DIM + 1) :])))
    elem.load_state_dict({**head.state_dict(), "qkv_proj.weight": elem.qkv_proj.weight})
    x = torch.randn(2, 16, D_MODEL, dtype=torch.float64)
    expected = elem(x, torch.arange(16))
    assert (head(x, torch.arange(16)) - expected).abs().max() <= TOL * expected.abs().max()
    # gate rows at zero: sigmoid(0) = 1/2 on every head, half of the same layer without a gate
    gate.zero_()
    plain = ours(BASE, local=True)
    kv_rows = head.qkv_proj.weight[HEADS * (HEAD_DIM + 1) :]
    plain.load_state_dict({**head.state_dict(), "qkv_proj.weight": torch.cat((query.flatten(0, 1), kv_rows))})
    expected = plain(x, torch.arange(16)) / 2
    assert (head(x, torch.arange(16)) - expected).abs().max() <= TOL * expected.abs().max()


@pytest.mark.parametrize("local", [True, False], ids=["sliding", "full"])
def test_projection_qk_norm_matches_olmo3_attention(local):
    config = Olmo3Config(hidden_size=D_MODEL, num_attention_heads=HEADS, num_key_value_heads=KV_HEADS,
                         attn_implementation="eager",
                         num_hidden_layers=2, sliding_window=WINDOW, rms_norm_eps=1e-6,
                         layer_types=["sliding_attention", "full_attention"],
                         rope_parameters={t: {"rope_type": "default", "rope_theta": 10_000.0}
                                          for t in ("sliding_attention", "full_attention")})  # fmt: skip
    hf = Olmo3Attention(config, layer_idx=0 if local else 1).double().eval()
    randomise(hf)
    module = ours(BASE.replace(qk_norm_scope="projection", norm="rmsnorm", head_dim=None), local)
    copy_projections(module, hf)
    with torch.no_grad():
        module.q_norm.weight.copy_(hf.q_norm.weight)
        module.k_norm.weight.copy_(hf.k_norm.weight)
    x = torch.randn(2, 16, D_MODEL, dtype=torch.float64)
    positions = torch.arange(16)
    layer_type = "sliding_attention" if local else "full_attention"
    cos_sin = Olmo3RotaryEmbedding(config).double()(x, positions[None], layer_type)
    with torch.no_grad():
        expected = hf(x, cos_sin, additive_mask(16, WINDOW if local else None))[0]
        got = module(x, positions)
    assert (got - expected).abs().max() <= TOL_FP32_SOFTMAX * expected.abs().max()


KNOBS = [
    {"attn_sinks": True},
    {"attn_sinks": True, "attn_logit": "softcap"},
    {"attn_gate": "headwise"},
    {"attn_gate": "elementwise", "k_eq_v_global": True, "v_norm": True},
    {"qk_norm_scope": "projection", "norm_placement": "reordered"},
    {"attn_sinks": True, "attn_gate": "elementwise", "qk_norm_scope": "projection", "kv_shared_layers": 2,
     "n_layers": 4, "layer_pattern": "1:1"},
]  # fmt: skip


@pytest.mark.parametrize("knobs", KNOBS, ids=str)
@torch.no_grad()
def test_decoding_equals_the_full_forward(knobs):
    """Token by token through the KV cache (local ring buffers wrap: 16 tokens, window 4) equals one forward."""
    cfg = BASE.replace(**knobs)
    torch.manual_seed(0)
    model = build_model(cfg).double().eval()
    for name, p in model.named_parameters():
        if name.endswith("sinks"):
            p.normal_(0, 1)
    ids = torch.randint(0, cfg.vocab_size, (2, 16))
    full = model(ids)
    cache = model.new_cache(2, 16)
    steps = torch.cat([model(ids[:, :5], cache)] + [model(ids[:, i : i + 1], cache) for i in range(5, 16)], dim=1)
    assert (steps - full).abs().max() <= TOL * full.abs().max()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"attn_gate": "full"}, "attn_gate: got 'full'; allowed: none, headwise, elementwise"),
        ({"qk_norm_scope": "layer"}, "qk_norm_scope: got 'layer'; allowed: head, projection"),
        ({"qk_norm_scope": "projection", "attn_logit": "softcap"}, "qk_norm_scope: got 'projection'; allowed: 'head'"),
        ({"attn_sinks": True, "attention": "mla"}, "attn_sinks: got True; allowed: False while global layers use"),
        ({"attn_sinks": 1}, "attn_sinks: got 1 of type int; expected bool"),
        ({"norm_placement": "postnorm"}, "norm_placement: got 'postnorm'; allowed: pre, post, sandwich, reordered"),
    ],
)
def test_bad_values_name_the_field_and_the_allowed_ones(change, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        BASE.replace(**change)
