import pytest
import torch

from tests.numerics import assert_close_to_reference, transformer_terms
from workbench import build_model, get_preset
from workbench.config import ModelConfig

TINY = get_preset("tiny")


def small_cfg(**overrides) -> ModelConfig:
    base = dict(d_model=32, n_layers=3, n_heads=4, n_kv_heads=2, mlp_hidden=64, window=4, max_seq_len=64)
    return TINY.replace(**{**base, **overrides})


VARIANTS = [
    {},
    {"attn_logit": "softcap", "final_softcap": 30.0},
    {"attn_logit": "softcap+qk_norm"},
    {"attn_logit": "none", "norm_placement": "pre", "norm": "rmsnorm", "mlp": "swiglu"},
    {"norm_placement": "post", "norm": "layernorm", "mlp": "gelu", "bias": True},
    {"mlp": "relu2", "tie_embeddings": False, "embed_scale": False, "position": "none"},
    {"head_dim": 12, "query_pre_attn_scalar": 20, "rope_fraction": 0.5},
    {"n_kv_heads": 1, "layer_pattern": "1:1"},
    # Gemma 4: per-type heads and proportional RoPE, K = V, KV sharing, PLE, MoE, layer scalars
    {
        "layer_pattern": "1:1",
        "kv_shared_layers": 1,
        "k_eq_v_global": True,
        "v_norm": True,
        "head_dim_global": 12,
        "rope_fraction_global": 0.5,
        "rope_partial": "proportional",
        "ple_dim": 4,
        "moe_experts": 3,
        "moe_hidden": 16,
        "layer_scalar": True,
        "double_wide_mlp": True,
    },
]


@pytest.mark.parametrize("overrides", VARIANTS, ids=str)
def test_causality(overrides):
    """Changing a future token never changes earlier logits."""
    model = build_model(small_cfg(**overrides)).eval()
    x = torch.randint(0, 264, (2, 20))
    y = x.clone()
    y[:, 12:] = torch.randint(0, 264, (2, 8))
    with torch.no_grad():
        a, b = model(x), model(y)
    assert_close_to_reference(a[:, :12], b[:, :12], terms=transformer_terms(model.cfg, 20))
    assert not torch.allclose(a[:, 12:], b[:, 12:])


@pytest.mark.parametrize("overrides", VARIANTS, ids=str)
def test_shapes_and_dtypes(overrides):
    model = build_model(small_cfg(**overrides))
    logits = model(torch.randint(0, 264, (3, 7)))
    assert logits.shape == (3, 7, 264) and logits.dtype == torch.float32
    with torch.no_grad():
        bf16 = model.to(torch.bfloat16)(torch.randint(0, 264, (1, 5)))
    assert bf16.dtype == torch.bfloat16


def test_window_masking():
    """All-local: a token more than W back never changes the logits; all-global: it does."""
    x = torch.randint(0, 264, (1, 24))
    y = x.clone()
    y[0, 3] = (x[0, 3] + 1) % 264  # position 3; with W=4 and 3 layers, influence reaches at most 3 + 3*3 = 12
    last = 23
    for pattern, changes in (("local", False), ("global", True)):
        model = build_model(small_cfg(layer_pattern=pattern)).eval()
        with torch.no_grad():
            diff = (model(x)[0, last] - model(y)[0, last]).abs().max().item()
        assert (diff > 1e-6) == changes, (pattern, diff)


def test_window_edge_includes_exactly_w_keys():
    """One local layer with W=4: query i sees keys i-3..i; key i-4 has no effect, key i-3 does."""
    model = build_model(small_cfg(layer_pattern="local", n_layers=1)).eval()
    x = torch.randint(0, 264, (1, 10))
    with torch.no_grad():
        base = model(x)[0, 9]
        for pos, matters in ((5, False), (6, True)):
            y = x.clone()
            y[0, pos] = (x[0, pos] + 1) % 264
            assert ((model(y)[0, 9] - base).abs().max() > 1e-6).item() == matters, pos


def test_set_window_changes_local_layers_only():
    cfg = small_cfg(layer_pattern="1:1", n_layers=2)
    model = build_model(cfg)
    assert model.set_window(2) is model
    assert [b.attn.window for b in model.blocks] == [2, None]
    assert model.cfg == cfg.replace(window=2)  # what reads the config (accounting, checkpoints, to_hf) sees it too
    with pytest.raises(ValueError, match="window"):
        model.set_window(0)


def test_gemma_norm_starts_at_identity_scale():
    model = build_model(small_cfg())
    assert torch.all(model.blocks[0].attn_pre_norm.weight == 0)
    model = build_model(small_cfg(norm="rmsnorm"))
    assert torch.all(model.blocks[0].attn_pre_norm.weight == 1)


@pytest.mark.parametrize("n_layers", [2, 4, 6])
def test_the_sandwich_post_norms_start_at_unit_gain_unless_scaled(n_layers):
    """Default: a sandwich branch leaves its post-norm at RMS 1, the reference init (HF and JAX Gemma: weight 0 in a
    (1 + w) scale); post_norm_init "scaled" gives 1/sqrt(2 n_layers), the scale of the output-projection init
    (norm_placement study: unit gains were 0.23 nats worse); the post placement's norms (on the residual stream)
    stay at the identity."""
    x = torch.randn(2, 5, 64) * 3

    def post_rms(model):
        names = ("attn_post_norm", "mlp_post_norm")
        return [getattr(b, n)(x).pow(2).mean(-1).sqrt() for b in model.blocks for n in names if hasattr(b, n)]

    for norm in ("gemma_rmsnorm", "rmsnorm"):
        unit = build_model(small_cfg(norm=norm, n_layers=n_layers, d_model=64))
        scaled = build_model(small_cfg(norm=norm, n_layers=n_layers, d_model=64, post_norm_init="scaled"))
        assert len(post_rms(unit)) == len(post_rms(scaled)) == 2 * n_layers
        for got in post_rms(scaled):
            torch.testing.assert_close(got, torch.full_like(got, (2 * n_layers) ** -0.5), rtol=1e-3, atol=1e-3)
        for got in post_rms(unit):
            torch.testing.assert_close(got, torch.ones_like(got), rtol=1e-3, atol=1e-3)
    post = build_model(small_cfg(norm="rmsnorm", norm_placement="post", n_layers=n_layers, d_model=64))
    assert all(torch.all(m.weight == 1) for m in post.modules() if isinstance(m, type(post.blocks[0].attn_post_norm)))


@pytest.mark.parametrize("norm", ["gemma_rmsnorm", "rmsnorm", "layernorm"])
def test_post_norm_init_sets_the_post_norms_output_rms_and_leaves_the_rest(norm):
    """A post-norm's output has RMS = its gain: post_norm_init g makes every sandwich branch start at RMS g, pre-norms
    and the weights stay as without it (same seed, same draws)."""
    torch.manual_seed(0)
    plain = build_model(small_cfg(norm=norm))
    torch.manual_seed(0)
    scaled = build_model(small_cfg(norm=norm, post_norm_init=0.25))
    x = torch.randn(2, 5, scaled.cfg.d_model) * 3
    for block in scaled.blocks:
        for name in ("attn_post_norm", "mlp_post_norm"):
            rms = getattr(block, name)(x).pow(2).mean(-1).sqrt()
            torch.testing.assert_close(rms, torch.full_like(rms, 0.25), rtol=1e-3, atol=1e-3)
    a, b = plain.state_dict(), scaled.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a if "post_norm" not in k)
    for bad in (0.0, -1.0, "scale", "1/sqrt(2L)"):
        with pytest.raises(ValueError, match=r"post_norm_init: got .*; allowed: null \(unit gains.*'scaled'.*> 0"):
            small_cfg(post_norm_init=bad)
    with pytest.raises(ValueError, match=r"post_norm_init: got True of type bool"):
        small_cfg(post_norm_init=True)
    with pytest.raises(ValueError, match=r"post_norm_init: got 0\.5; allowed: null with norm 'rmsnorm_unscaled'"):
        small_cfg(norm="rmsnorm_unscaled", post_norm_init=0.5)


def test_same_seed_same_weights():
    torch.manual_seed(5)
    a = build_model(small_cfg()).state_dict()
    torch.manual_seed(5)
    b = build_model(small_cfg()).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
