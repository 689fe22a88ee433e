import json

import pytest
import torch

from analysis.flops import (
    attended_pairs,
    decode_flops,
    forward_flops,
    fvcore_flops,
    layer_flops,
    main,
    prefill_flops,
    training_flops,
)
from analysis.params import attention_params, mlp_params, norm_params
from workbench import get_preset
from workbench.config import ModelConfig
from workbench.model import build_model

# d=8, 2 query heads and 1 KV head of dim 4, GeGLU hidden 16, vocabulary 10, local then global, window 2
HAND = ModelConfig(vocab_size=10, d_model=8, n_layers=2, n_heads=2, n_kv_heads=1, mlp_hidden=16, max_seq_len=8,
                   layer_pattern="1:1", window=2)  # fmt: skip


def test_attended_pairs_by_hand():
    assert attended_pairs("local", 10, window=4) == 1 + 2 + 3 + 4 * 7
    assert attended_pairs("global", 10, window=4) == 55
    assert attended_pairs("local", 2, window=4, start=8) == 4 + 4
    assert attended_pairs("global", 2, window=4, start=8) == 9 + 10
    assert attended_pairs("local", 3, window=100) == attended_pairs("global", 3, window=100) == 6


def test_layer_flops_by_hand():
    local, glob = layer_flops(HAND, 3)
    # q, k, v, o: 2 * 3 tokens * 8 * 4 * (2 + 1 + 1 + 2); MLP: 2 * 3 * 8 * 16 * 3 matrices
    assert (local.projections, local.mlp) == (glob.projections, glob.mlp) == (1152, 2304)
    # pairs: local 1 + 2 + 2, global 1 + 2 + 3; attention 2 FLOPs * (QK + PV) * head_dim 4 * 2 heads per pair
    assert (local.pairs, glob.pairs) == (5, 6)
    assert (local.attention, glob.attention) == (160, 192)
    # plus the LM head: 2 * 3 * 8 * 10
    assert forward_flops(HAND, 3) == 2 * (1152 + 2304) + 160 + 192 + 480
    assert training_flops(HAND, 3) == 3 * 7744


def test_decode_at_context_by_hand():
    # the 6th token (5 cached): local sees 2 keys, global 6
    per_layer = 2 * (8 * 4 * 6 + 8 * 16 * 3)
    assert decode_flops(HAND, 5) == 2 * per_layer + 32 * (2 + 6) + 2 * 8 * 10


def test_decode_steps_sum_to_prefill():
    cfg = get_preset("gemma3-1b")
    n = 1500  # past the 512 window
    assert sum(decode_flops(cfg, c) for c in range(n)) == prefill_flops(cfg, n)


def test_matmul_flops_are_twice_the_matmul_params():
    cfg = get_preset("gemma3-27b")
    layer = layer_flops(cfg, 7)[0]
    matmul_params = attention_params(cfg) - 2 * norm_params(cfg, cfg.resolved_head_dim) + mlp_params(cfg)
    assert layer.projections + layer.mlp == 2 * 7 * matmul_params


def test_window_saves_attention_flops_at_long_context():
    cfg = get_preset("gemma3-27b")
    hybrid, all_global = forward_flops(cfg, 32_768), forward_flops(cfg.replace(layer_pattern="global"), 32_768)
    assert hybrid < all_global
    attn = [lf.attention for lf in layer_flops(cfg, 32_768)]
    assert min(attn) < max(attn) / 10  # local layers attend to at most 1024 keys


@pytest.mark.parametrize(
    "extra",
    [{}, {"attn_logit": "softcap", "final_softcap": 30.0}, {"attention_global": "mla"}],
    ids=["sdpa", "softcap", "mla-global"],
)
def test_fvcore_equals_analytic_on_windowed_model(extra):
    cfg = get_preset("tiny").replace(n_layers=3, layer_pattern="2:1", window=4, max_seq_len=16, **extra)
    model = build_model(cfg).eval()
    batch, tokens = 2, 11
    counted = fvcore_flops(model, torch.randint(0, cfg.vocab_size, (batch, tokens)))
    assert counted[""] == batch * forward_flops(cfg, tokens)
    for lf in layer_flops(cfg, tokens):
        assert counted[f"blocks.{lf.layer}"] == batch * lf.total
        assert counted[f"blocks.{lf.layer}.attn"] == batch * (lf.projections + lf.attention)


def test_cli_json(capsys):
    main(["tiny", "--context", "128", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert out["forward"] == forward_flops(get_preset("tiny"), 128)
    assert out["training"] == 3 * out["forward"]
    assert out["forward_all_global"] > out["forward"]
    assert [lay["type"] for lay in out["layers"]] == list(get_preset("tiny").layer_types)


def test_cli_table(capsys):
    main(["gemma3-1b", "--context", "4096"])
    out = capsys.readouterr().out
    assert "global" in out and "lm head" in out and "training (3x)" in out and "local layers save" in out


class CausalAttention(torch.nn.Module):
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


def test_mla_flops_by_hand():
    # one global MLA layer: d=8, 2 heads of 4, latent 6, rope 2; 3 tokens, no cache
    cfg = HAND.replace(n_layers=1, layer_pattern="global", attention="mla", mla_latent_dim=6, mla_rope_dim=2)
    (layer,) = layer_flops(cfg, 3)
    per_token = 8 * 2 * (4 + 2) + 8 * 6 + 8 * 2 + 2 * 4 * 8  # q, latent down, rope key, output
    assert layer.projections == 2 * 3 * per_token + 2 * 3 * 6 * 2 * 2 * 4  # plus k and v up-projections of 3 keys
    assert layer.attention == 2 * (2 * 4 + 2) * 2 * 6  # 6 causal pairs; QK over 4 + 2 dims, PV over 4


def test_mla_on_global_layers_only():
    cfg = HAND.replace(attention_global="mla")
    local, glob = layer_flops(cfg, 3)
    assert local == layer_flops(HAND, 3)[0]
    assert glob.projections != layer_flops(HAND, 3)[1].projections
