import pytest
import torch

from analysis.kv_cache import kv_cache_bytes
from analysis.params import count_params
from tests.numerics import assert_close_to_reference, transformer_terms
from workbench import build_model, get_preset
from workbench.blocks.mla import MultiHeadLatentAttention

BASE = get_preset("tiny").replace(n_layers=6, window=8, max_seq_len=64)
ARMS = {
    "mla-everywhere": BASE.replace(attention="mla"),
    "mla-on-global": BASE.replace(attention_global="mla"),
    "mla-global-model-softcap": BASE.replace(attention="mla", layer_pattern="global", attn_logit="softcap"),
    "mla-bias-pre": BASE.replace(attention="mla", bias=True, norm="layernorm", norm_placement="pre"),
}


def _latent_minus_mha_params(cfg) -> int:
    """What one latent-attention layer adds over an MHA one, from DeepSeek-V2's projections: queries with a decoupled
    RoPE part, the down-projection to the latent and its norm, one shared RoPE key, keys and values up from the
    latent; MHA's q, k and v projections out (both keep the output projection and the q/k norms)."""
    d, h, hd, c, r = cfg.d_model, cfg.n_heads, cfg.resolved_head_dim, cfg.mla_latent_dim, cfg.mla_rope_dim
    latent = d * h * (hd + r) + d * c + c + d * r + 2 * c * h * hd
    mha = d * h * hd + 2 * d * cfg.n_kv_heads * hd
    if cfg.bias:  # a bias per output, and the latent norm's shift
        latent += h * (hd + r) + c + r + 2 * h * hd + (c if cfg.norm == "layernorm" else 0)
        mha += h * hd + 2 * cfg.n_kv_heads * hd
    return latent - mha


@pytest.mark.parametrize("cfg", ARMS.values(), ids=ARMS.keys())
def test_parameter_count_is_the_mha_model_s_plus_the_latent_projections(cfg):
    """The MHA model's count (against transformers' in test_presets.py) plus the difference per latent layer."""
    mha = cfg.replace(attention="mha", attention_global=None)
    n_latent = sum(cfg.attention_for(t) == "mla" for t in cfg.layer_types)
    expected = count_params(mha)["total"] + n_latent * _latent_minus_mha_params(cfg)
    assert sum(p.numel() for p in build_model(cfg).parameters()) == count_params(cfg)["total"] == expected


def test_mla_only_where_asked():
    model = build_model(ARMS["mla-on-global"])
    kinds = [(b.layer_type, type(b.attn) is MultiHeadLatentAttention) for b in model.blocks]
    assert all(is_mla == (layer_type == "global") for layer_type, is_mla in kinds)


@pytest.mark.parametrize("cfg", ARMS.values(), ids=ARMS.keys())
@pytest.mark.numerics
def test_shapes_and_causality(cfg):
    model = build_model(cfg).eval()
    x = torch.randint(0, 264, (2, 20))
    y = x.clone()
    y[:, 15:] = (y[:, 15:] + 1) % 264
    with torch.no_grad():
        a, b = model(x), model(y)
    assert a.shape == (2, 20, 264)
    assert_close_to_reference(a[:, :15], b[:, :15], terms=transformer_terms(cfg, 20))
    assert not torch.allclose(a[:, 15:], b[:, 15:])


@pytest.mark.parametrize("cfg", ARMS.values(), ids=ARMS.keys())
@pytest.mark.numerics
def test_cached_decoding_equals_full_forward(cfg):
    model = build_model(cfg).eval()
    x = torch.randint(0, 264, (2, 40))  # five times the window
    cache = model.new_cache(2, 40)
    with torch.no_grad():
        full = model(x)
        steps = [model(x[:, :7], cache)] + [model(x[:, i : i + 1], cache) for i in range(7, 40)]
    assert_close_to_reference(torch.cat(steps, dim=1), full, terms=transformer_terms(cfg, 40))


@pytest.mark.parametrize("cfg", ARMS.values(), ids=ARMS.keys())
@pytest.mark.parametrize("context", [5, 8, 33])
def test_measured_cache_bytes_equal_computed(cfg, context):
    cache = build_model(cfg).new_cache(3, context, dtype=torch.bfloat16)
    assert cache.nbytes == kv_cache_bytes(cfg, context, batch_size=3, dtype="bfloat16")


def test_mla_cache_is_latent_plus_rope_key_only():
    cfg = BASE.replace(attention="mla", layer_pattern="global", mla_latent_dim=24, mla_rope_dim=8)
    per_token_per_layer = kv_cache_bytes(cfg, 1, dtype="float32") // cfg.n_layers
    assert per_token_per_layer == (24 + 8) * 4
    mha = BASE.replace(layer_pattern="global")
    assert kv_cache_bytes(cfg, 100) < kv_cache_bytes(mha, 100)


@pytest.mark.parametrize(
    ("overrides", "field"),
    [({"attention_global": "gqa"}, "attention_global"), ({"mla_latent_dim": 0}, "mla_latent_dim"),
     ({"mla_rope_dim": 3}, "mla_rope_dim")],
)  # fmt: skip
def test_bad_mla_values(overrides, field):
    with pytest.raises(ValueError, match=f"^{field}:"):
        BASE.replace(**overrides)
