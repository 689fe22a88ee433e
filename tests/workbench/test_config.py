import pytest

from workbench.config import ModelConfig
from workbench.presets import get_preset

# (overrides, field named in the error, a fragment of what is allowed)
BAD_VALUES = [
    ({"n_heads": 4, "n_kv_heads": 3}, "n_kv_heads", "divisible"),
    ({"window": 0}, "window", "> 0"),
    ({"window": -4}, "window", "> 0"),
    ({"layer_pattern": "banana"}, "layer_pattern", "ratio"),
    ({"layer_pattern": "5:0"}, "layer_pattern", ">= 1"),
    ({"layer_pattern": "0:1"}, "layer_pattern", ">= 1"),
    ({"layer_pattern": ["local", "global"]}, "layer_pattern", "n_layers=6"),
    ({"layer_pattern": ["local"] * 5 + ["middle"]}, "layer_pattern", "'local' or 'global'"),
    ({"d_model": 0}, "d_model", "> 0"),
    ({"mlp_hidden": -1}, "mlp_hidden", "> 0"),
    ({"n_layers": 0}, "n_layers", "> 0"),
    ({"vocab_size": 0}, "vocab_size", "> 0"),
    ({"head_dim": 0}, "head_dim", "> 0"),
    ({"d_model": 130, "n_heads": 4, "head_dim": None}, "head_dim", "divisible"),
    ({"mlp": "mish"}, "mlp", "geglu"),
    ({"norm": "batchnorm"}, "norm", "rmsnorm"),
    ({"attention": "linear"}, "attention", "mha"),
    ({"position": "alibi"}, "position", "rope"),
    ({"norm_placement": "middle"}, "norm_placement", "sandwich"),
    ({"attn_logit": "clip"}, "attn_logit", "qk_norm"),
    ({"attn_softcap": 0.0}, "attn_softcap", "> 0"),
    ({"final_softcap": -30.0}, "final_softcap", "> 0"),
    ({"query_pre_attn_scalar": 0}, "query_pre_attn_scalar", "> 0"),
    ({"rope_base_local": 0}, "rope_base_local", "> 0"),
    ({"rope_scaling_global": 0}, "rope_scaling_global", "> 0"),
    ({"rope_fraction": 0.3}, "rope_fraction", "even integer"),
    ({"rope_fraction": 1.5}, "rope_fraction", "<= 1"),
    ({"dropout": 1.0}, "dropout", "< 1"),
    ({"norm_eps": 0}, "norm_eps", "> 0"),
    ({"d_model": "128"}, "d_model", "int"),
    ({"tie_embeddings": "yes"}, "tie_embeddings", "bool"),
    ({"n_heads": True}, "n_heads", "int"),
    ({"layer_pattern": "5:1+last"}, "layer_pattern", "+last_global"),
    ({"head_dim_global": 0}, "head_dim_global", "> 0"),
    ({"n_kv_heads_global": 3}, "n_kv_heads_global", "divisor of n_heads=4"),
    ({"n_kv_heads_global": 0}, "n_kv_heads_global", "divisor"),
    ({"rope_fraction_global": 0.3}, "rope_fraction_global", "even integer"),
    ({"rope_fraction_global": 0.0}, "rope_fraction_global", "0 < fraction"),
    ({"rope_partial": "middle"}, "rope_partial", "proportional"),
    ({"kv_shared_layers": -1}, "kv_shared_layers", "0 <= N < n_layers=6"),
    ({"kv_shared_layers": 6}, "kv_shared_layers", "0 <= N < n_layers=6"),
    ({"kv_shared_layers": 1}, "kv_shared_layers", "an earlier layer of every type"),  # LLLLLG: the G has none
    ({"ple_dim": -2}, "ple_dim", "0 (no per-layer inputs)"),
    ({"ple_vocab_size": 100}, "ple_vocab_size", ">= vocab_size=264"),
    ({"moe_experts": -1}, "moe_experts", "0 (no MoE block)"),
    ({"moe_experts": 2, "moe_top_k": 3}, "moe_top_k", "1 <= k <= moe_experts=2"),
    ({"moe_experts": 2, "moe_top_k": 0}, "moe_top_k", "1 <= k"),
    ({"moe_hidden": 0}, "moe_hidden", "> 0"),
    ({"v_norm": 1}, "v_norm", "bool"),
    ({"attention": "mla", "v_norm": True}, "v_norm", "attention 'mla', which does not read it"),
    ({"attention_global": "mla", "head_dim_global": 64}, "head_dim_global", "does not read it"),
    ({"attention_global": "mla", "layer_pattern": "1:1", "kv_shared_layers": 2}, "kv_shared_layers", "'mla'"),
]


@pytest.mark.parametrize(("overrides", "field", "allowed"), BAD_VALUES, ids=lambda v: str(v)[:40])
def test_bad_value_names_field_value_and_allowed(overrides, field, allowed):
    with pytest.raises(ValueError) as err:
        get_preset("tiny").replace(**overrides)
    message = str(err.value)
    assert message.startswith(f"{field}:"), message
    assert allowed in message
    given = next(iter(overrides.values())) if len(overrides) == 1 else overrides[field]
    if not isinstance(given, list):
        assert repr(given) in message or str(given) in message


def test_unknown_keys_from_dict_are_listed():
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['windw'\].*allowed keys:.*window"):
        ModelConfig.from_dict({"windw": 3})


def test_dict_round_trip():
    cfg = get_preset("gemma3-27b")
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize(
    ("pattern", "n_layers", "expected_globals"),
    [
        ("5:1", 12, [5, 11]),
        ("1:1", 4, [1, 3]),
        ("3:1", 8, [3, 7]),
        ("global", 3, [0, 1, 2]),
        ("local", 3, []),
        (("global", "local", "global"), 3, [0, 2]),
        ("5:1+last_global", 8, [5, 7]),
        ("5:1+last_global", 6, [5]),
        ("local+last_global", 3, [2]),
        ("global+last_global", 2, [0, 1]),
    ],
)
def test_layer_patterns(pattern, n_layers, expected_globals):
    cfg = get_preset("tiny").replace(layer_pattern=pattern, n_layers=n_layers)
    assert [i for i, t in enumerate(cfg.layer_types) if t == "global"] == expected_globals


def test_gemma3_rule_for_five_to_one():
    types = get_preset("gemma3-27b").layer_types
    assert all((t == "global") == ((i + 1) % 6 == 0) for i, t in enumerate(types))


def test_softcap_and_qk_norm_only_together_when_asked():
    assert get_preset("gemma3-1b").qk_norm and get_preset("gemma3-1b").softcap is None
    assert get_preset("gemma2-2b").softcap == 50.0 and not get_preset("gemma2-2b").qk_norm
    both = get_preset("tiny").replace(attn_logit="softcap+qk_norm")
    assert both.qk_norm and both.softcap == 50.0
