import json

from analysis.flops import decode_flops, forward_flops, layer_flops, main, prefill_flops, training_flops
from workbench import get_preset
from workbench.blocks.attention import attended_pairs
from workbench.config import ModelConfig

# d=8, 2 query heads and 1 KV head of dim 4, GeGLU hidden 16, vocabulary 10, local then global, window 2
HAND = ModelConfig(vocab_size=10, d_model=8, n_layers=2, n_heads=2, n_kv_heads=1, mlp_hidden=16, max_seq_len=8,
                   layer_pattern="1:1", window=2)  # fmt: skip


def test_attended_pairs_by_hand():
    assert attended_pairs(10, window=4) == 1 + 2 + 3 + 4 * 7
    assert attended_pairs(10, window=None) == 55
    assert attended_pairs(2, window=4, start=8) == 4 + 4
    assert attended_pairs(2, window=None, start=8) == 9 + 10
    assert attended_pairs(3, window=100) == attended_pairs(3, window=None) == 6


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


def test_window_saves_attention_flops_at_long_context():
    cfg = get_preset("gemma3-27b")
    hybrid, all_global = forward_flops(cfg, 32_768), forward_flops(cfg.replace(layer_pattern="global"), 32_768)
    assert hybrid < all_global
    attn = [lf.attention for lf in layer_flops(cfg, 32_768)]
    assert min(attn) < max(attn) / 10  # local layers attend to at most 1024 keys


def test_cli_json(capsys):
    main(["tiny", "--context", "128", "--json"])
    out = json.loads(capsys.readouterr().out)
    # tiny by hand: d 128, 4 query heads and 2 KV heads of 32, GeGLU 384, vocabulary 264; 5 local layers (window
    # 64: 64 * 65 / 2 + 64 * 64 pairs) and 1 global (128 * 129 / 2 pairs); 2 * 2 * 32 * 4 FLOPs per pair
    dense = 6 * 2 * 128 * (128 * 32 * (2 * 4 + 2 * 2) + 3 * 128 * 384)
    attention = 2 * 2 * 32 * 4 * (5 * (64 * 65 // 2 + 64 * 64) + 128 * 129 // 2)
    assert out["lm_head"] == 2 * 128 * 128 * 264
    assert out["forward"] == dense + attention + out["lm_head"]
    assert out["training"] == 3 * out["forward"]
    assert out["forward_all_global"] > out["forward"]
    assert [lay["type"] for lay in out["layers"]] == list(get_preset("tiny").layer_types)


def test_cli_table(capsys):
    main(["gemma3-1b", "--context", "4096"])
    out = capsys.readouterr().out
    assert "global" in out and "lm head" in out and "training (3x)" in out and "local layers save" in out


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
