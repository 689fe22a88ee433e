"""OLMo 3 beside Gemma: logit parity with transformers' `Olmo3ForCausalLM` on small random references (sliding and
full layers, QK-norm over the projection, post-norm "reordered" blocks), both conversions, greedy decoding, faults.

Tolerance (fp32): our model and the reference run the same operations in a different order (a fused q/k/v matmul,
SDPA vs an explicit softmax), so each differs from the exact function by fp32 rounding. The float64 check bounds
that exactly: the reference in float64 still takes its softmax in float32, so the two agree to a few eps32 of the
logits' scale (measured: 1.2e-6 at a scale of 3.6, 2.8 eps32); in fp32 the rounding of 8 layers of width 64 adds to
it (measured: 5.3e-6), and the bar of 1e-4 keeps over an order of magnitude of margin while each fault below moves
the logits by more than 1e-2.
"""

import functools

import pytest
import torch
from transformers import Olmo3Config, Olmo3ForCausalLM

from workbench import build_model, get_preset
from workbench.generate import generate
from workbench.interop import config_from_hf, config_to_hf, from_hf, to_hf

WINDOW, SEQ, VOCAB = 4, 24, 128
LAYER_TYPES = ["sliding_attention", "sliding_attention", "sliding_attention", "full_attention",
               "sliding_attention", "full_attention", "full_attention", "sliding_attention"]  # fmt: skip
ROPE = {"sliding_attention": {"rope_type": "default", "rope_theta": 10_000.0},
        "full_attention": {"rope_type": "linear", "rope_theta": 500_000.0, "factor": 2.0}}  # fmt: skip
TOL_FP32 = 1e-4
TOL_FP64 = 64 * torch.finfo(torch.float32).eps  # the reference's float32 softmax, relative to the logits' scale


def reference(**overrides) -> Olmo3ForCausalLM:
    """8 layers (sliding and full in a pattern no ratio names), GQA 4:2, window 4 < sequence 24, random norms."""
    values = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=8, num_attention_heads=4,
                  num_key_value_heads=2, sliding_window=WINDOW, max_position_embeddings=64, rms_norm_eps=1e-6,
                  layer_types=LAYER_TYPES, rope_parameters=ROPE, eos_token_id=None)  # fmt: skip
    config = Olmo3Config(attn_implementation="eager", **{**values, **overrides})
    torch.manual_seed(0)
    model = Olmo3ForCausalLM(config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.normal_(1.0, 0.5) if "norm" in name else p.normal_(0.0, 0.1)
    return model.eval()


@functools.cache
def ref() -> tuple[Olmo3ForCausalLM, torch.Tensor]:
    return reference(), torch.randint(0, VOCAB, (2, SEQ), generator=torch.Generator().manual_seed(1))


def logits(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        out = model(x)
    return out if isinstance(out, torch.Tensor) else out.logits


def test_config_maps_every_structural_choice():
    cfg = config_from_hf(ref()[0].config)
    assert cfg.layer_types == tuple("local" if t == "sliding_attention" else "global" for t in LAYER_TYPES)
    assert (cfg.norm_placement, cfg.qk_norm_scope, cfg.attn_logit, cfg.mlp, cfg.norm) == (
        "reordered", "projection", "qk_norm", "swiglu", "rmsnorm")  # fmt: skip
    assert (cfg.window, cfg.rope_base_local, cfg.rope_base_global, cfg.rope_scaling_global) == (4, 1e4, 5e5, 2.0)
    assert not cfg.embed_scale and not cfg.tie_embeddings and cfg.resolved_head_dim == 16


def test_logits_match_fp32():
    hf, x = ref()
    expected = logits(hf, x)
    diff = (logits(from_hf(hf), x) - expected).abs().max().item()
    assert diff <= TOL_FP32 and expected.abs().max() > 1.0


@pytest.mark.parametrize("seq", [SEQ, 16])  # 16 = 4 windows: the local layers' blocked O(T W) path
def test_logits_match_fp64(seq):
    x = ref()[1][:, :seq]
    hf64 = reference().double()
    expected = logits(hf64, x)
    assert (logits(from_hf(hf64), x) - expected).abs().max() <= TOL_FP64 * expected.abs().max()


def test_round_trip_is_exact():
    hf, _ = ref()
    back = to_hf(from_hf(hf))
    assert type(back) is Olmo3ForCausalLM
    ours, theirs = back.state_dict(), hf.state_dict()
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    assert config_from_hf(config_to_hf(config_from_hf(hf.config))) == config_from_hf(hf.config)


def test_greedy_matches_transformers_generate():
    hf, _ = ref()
    hf.generation_config.eos_token_id = None  # never stop early
    prompt = torch.randint(0, VOCAB, (2, 5), generator=torch.Generator().manual_seed(2))
    expected = hf.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=15, do_sample=False)
    assert torch.equal(generate(from_hf(hf), prompt, 15), expected)
    assert len(set(expected[0, 5:].tolist())) > 3  # not one token repeated


def test_preset_exports_and_matches():
    """`olmo3-tiny` (random init) converts to transformers and computes the same logits."""
    torch.manual_seed(0)
    ours = build_model(get_preset("olmo3-tiny")).eval()
    x = torch.randint(0, 264, (1, 40))
    assert (logits(to_hf(ours), x) - logits(ours, x)).abs().max() <= TOL_FP32


def _fault(name: str, model: torch.nn.Module) -> None:
    block = model.blocks[0]
    if name == "window":
        block.attn.window = None  # a sliding layer attends globally
    elif name == "rope_base":
        block.attn.rope.inv_freq.mul_(2.0)
    elif name == "k_norm":
        block.attn.k_norm.weight.add_(0.1)
    elif name == "post_norm":
        block.mlp_post_norm.weight.add_(0.1)


@pytest.mark.parametrize("fault", ["window", "rope_base", "k_norm", "post_norm"])
@torch.no_grad()
def test_a_single_fault_breaks_parity(fault):
    hf, x = ref()
    ours = from_hf(hf)
    _fault(fault, ours)
    assert (logits(ours, x) - logits(hf, x)).abs().max() > 1e-2


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"hidden_act": "gelu"}, "hidden_act: got 'gelu'; allowed: 'silu'"),
        ({"attention_bias": True}, "attention_bias: got True; allowed: False"),
    ],
)
def test_unmodelled_config_values_raise(override, message):
    config = Olmo3Config(num_hidden_layers=4, hidden_size=64, num_attention_heads=4, intermediate_size=96, **override)
    with pytest.raises(ValueError, match=message):
        config_from_hf(config)


def test_unmodelled_knobs_do_not_export():
    with pytest.raises(ValueError, match="attn_sinks: got True; allowed: False, its default"):
        config_to_hf(get_preset("olmo3-tiny").replace(attn_sinks=True))
    with pytest.raises(ValueError, match="qk_norm_scope: got 'head'; allowed: 'projection'"):
        config_to_hf(get_preset("olmo3-tiny").replace(qk_norm_scope="head"))
