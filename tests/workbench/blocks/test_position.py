import math

import pytest
import torch
from transformers import Gemma3TextConfig
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

from tests.numerics import assert_close_to_reference
from workbench import build_model, get_preset
from workbench.blocks.position import rope_frequencies

pytestmark = pytest.mark.numerics  # every test here compares floating-point results

BASE = get_preset("tiny").replace(layer_pattern="global", n_layers=2, max_seq_len=32)


def hf_frequencies(kind: str, factor: float, head_dim: int, base: float, original: int):
    params = {"rope_type": kind, "rope_theta": base, "factor": factor, "original_max_position_embeddings": original}
    cfg = Gemma3TextConfig(
        head_dim=head_dim, rope_parameters={"full_attention": params, "sliding_attention": {"rope_type": "default"}}
    )
    return ROPE_INIT_FUNCTIONS[kind](cfg, "cpu", layer_type="full_attention")


@pytest.mark.parametrize(("kind", "factor"), [("linear", 8.0), ("yarn", 4.0), ("yarn", 8.0)])
def test_matches_transformers(kind, factor):
    ours, ours_scale = rope_frequencies(64, 10_000.0, factor, kind, 512)
    theirs, their_scale = hf_frequencies(kind, factor, 64, 10_000.0, 512)
    # each frequency on its own scale (they span four decades): base ** (-i / d), the factor and YaRN's blend
    assert_close_to_reference(ours, theirs, terms=6, elementwise=True)
    assert ours_scale == pytest.approx(their_scale)


@pytest.mark.parametrize("kind", ["linear", "ntk", "yarn"])
def test_factor_one_is_plain_rope(kind):
    plain, _ = rope_frequencies(32, 1e4, 1.0, "linear", 256)
    ours, scale = rope_frequencies(32, 1e4, 1.0, kind, 256)
    assert torch.equal(ours, plain) and scale == 1.0


def test_ntk_keeps_the_highest_frequency_and_stretches_the_lowest():
    plain, _ = rope_frequencies(32, 1e4, 1.0, "linear", 256)
    ntk, _ = rope_frequencies(32, 1e4, 4.0, "ntk", 256)
    assert ntk[0].item() == plain[0].item()
    assert ntk[-1].item() == pytest.approx(plain[-1].item() / 4.0, rel=1e-5)


def test_yarn_keeps_fast_dims_and_interpolates_slow_ones():
    plain, _ = rope_frequencies(64, 1e4, 1.0, "linear", 256)
    yarn, _ = rope_frequencies(64, 1e4, 8.0, "yarn", 8192)
    assert torch.equal(yarn[:4], plain[:4])
    assert_close_to_reference(yarn[-4:], plain[-4:] / 8.0, terms=6, elementwise=True)


def test_extension_applies_to_global_layers_only():
    cfg = BASE.replace(layer_pattern="1:1", rope_scaling_global=4.0, rope_scaling_type="ntk")
    model = build_model(cfg)
    local, global_ = model.blocks[0].attn.rope, model.blocks[1].attn.rope
    assert torch.equal(local.inv_freq, rope_frequencies(32, 1e4, 1.0, "linear", 32)[0])
    assert not torch.equal(global_.inv_freq, rope_frequencies(32, 1e6, 1.0, "linear", 32)[0])


def test_partial_rotary_leaves_the_rest_untouched():
    model = build_model(BASE.replace(rope_fraction=0.5))
    rope = model.blocks[0].attn.rope
    q = torch.randn(1, 4, 6, 32)
    rq, _ = rope(q, q[:, :2], torch.arange(6))
    assert torch.equal(rq[..., 16:], q[..., 16:]) and not torch.equal(rq[..., :16], q[..., :16])


def test_bad_scaling_type():
    with pytest.raises(ValueError, match=r"^rope_scaling_type: got 'dynamic'"):
        BASE.replace(rope_scaling_type="dynamic")


# What each method promises for the rotations it applies on a global layer (head_dim 32: pair i is dims i, i + 16).
ROTATION_TERMS = 5  # roundings in a rotated value: the angle, its cos or sin, the rotation's two products and sum


def _rope(**changes):
    return build_model(BASE.replace(rope_base_global=1e4, **changes)).blocks[0].attn.rope


def _rotate(rope, positions):
    q = torch.linspace(-1, 1, 4 * len(positions) * 32).reshape(1, 4, len(positions), 32)
    return rope(q, q[:, :2], torch.tensor(positions))[0]


def _pairs(indices):
    return [*indices, *(i + 16 for i in indices)]


def test_linear_puts_each_extended_position_where_the_original_was():
    plain, linear = _rope(), _rope(rope_scaling_type="linear", rope_scaling_global=4.0)
    torch.testing.assert_close(_rotate(linear, [0, 4, 40, 124]), _rotate(plain, [0, 1, 10, 31]), rtol=0, atol=0)
    assert not torch.allclose(_rotate(linear, [5]), _rotate(plain, [5]))  # no promise inside the original context


def test_ntk_keeps_the_fastest_pair_and_interpolates_the_slowest():
    plain, ntk = _rope(), _rope(rope_scaling_type="ntk", rope_scaling_global=4.0)
    positions = [0, 3, 17, 31]
    fast, slow, middle = _pairs([0]), _pairs([15]), _pairs([8])
    assert torch.equal(_rotate(ntk, positions)[..., fast], _rotate(plain, positions)[..., fast])
    extended = [4 * p for p in positions]
    assert_close_to_reference(_rotate(ntk, extended)[..., slow], _rotate(plain, positions)[..., slow],
                              terms=ROTATION_TERMS)  # fmt: skip
    assert not torch.allclose(_rotate(ntk, positions)[..., middle], _rotate(plain, positions)[..., middle])


def test_yarn_keeps_fast_dims_unchanged_within_the_original_context_up_to_its_scale():
    # base 1e4, original context 4096: pairs 0-5 turn > 32 times within it (kept), pairs >= 12 < once (interpolated)
    plain, yarn = _rope(), _rope(rope_scaling_type="yarn", rope_scaling_global=4.0, rope_original_context=4096)
    scale = yarn.multiplier
    assert scale == pytest.approx(0.1 * math.log(4.0) + 1)
    positions = [0, 1, 100, 1000, 4095]
    fast, slow = _pairs(range(6)), _pairs(range(12, 16))
    assert_close_to_reference(_rotate(yarn, positions)[..., fast], scale * _rotate(plain, positions)[..., fast],
                              terms=ROTATION_TERMS)  # fmt: skip
    extended = [4 * p for p in positions]
    assert_close_to_reference(_rotate(yarn, extended)[..., slow], scale * _rotate(plain, positions)[..., slow],
                              terms=ROTATION_TERMS)  # fmt: skip
    ramp = _pairs(range(6, 12))
    assert not torch.allclose(_rotate(yarn, positions)[..., ramp], scale * _rotate(plain, positions)[..., ramp])


# proportional partial RoPE (Gemma 4's global layers) against transformers' `proportional` rope type ---------------
def hf_proportional_cos_sin(head_dim: int, fraction: float, factor: float, positions: torch.Tensor):
    """cos/sin of transformers' Gemma4TextRotaryEmbedding on full_attention layers."""
    from transformers import Gemma4TextConfig
    from transformers.models.gemma4.modeling_gemma4 import Gemma4TextRotaryEmbedding

    full = {"rope_type": "proportional", "rope_theta": 1e6, "partial_rotary_factor": fraction, "factor": factor}
    config = Gemma4TextConfig(
        num_hidden_layers=2, layer_types=["sliding_attention", "full_attention"], head_dim=16,
        global_head_dim=head_dim, rope_parameters={"sliding_attention": {"rope_type": "default", "rope_theta": 1e4},
                                                   "full_attention": full},
    )  # fmt: skip
    x = torch.zeros(1, dtype=torch.float32)
    return Gemma4TextRotaryEmbedding(config)(x, positions[None], "full_attention")


@pytest.mark.parametrize(("head_dim", "fraction", "factor"), [(64, 0.25, 1.0), (32, 0.5, 4.0), (16, 1.0, 1.0)])
def test_proportional_matches_transformers(head_dim, fraction, factor):
    from transformers.models.gemma4.modeling_gemma4 import apply_rotary_pos_emb

    from workbench.blocks.position import RoPE

    cfg = BASE.replace(rope_partial="proportional", rope_scaling_global=factor)
    rope = RoPE(int(head_dim * fraction), cfg, local=False, head_dim=head_dim)
    positions = torch.tensor([0, 1, 7, 100, 3000])
    x = torch.randn(2, 3, len(positions), head_dim)
    cos, sin = hf_proportional_cos_sin(head_dim, fraction, factor, positions)
    expected = apply_rotary_pos_emb(x.transpose(1, 2), cos, sin, unsqueeze_dim=2).transpose(1, 2)
    assert_close_to_reference(rope.rotate(x, positions), expected, terms=ROTATION_TERMS)


def test_proportional_spreads_the_rotated_pairs_over_both_halves_and_leading_does_not():
    """A quarter of 32 dims: proportional turns pairs (0..3, 16..19) at whole-head frequencies; leading turns
    dims 0..7 at frequencies spread over 8 dims."""
    from workbench.blocks.position import RoPE

    x, positions = torch.randn(1, 1, 5, 32), torch.arange(5) + 3
    proportional = RoPE(8, BASE.replace(rope_partial="proportional"), local=False, head_dim=32).rotate(x, positions)
    leading = RoPE(8, BASE, local=False, head_dim=32).rotate(x, positions)
    turned = [*range(4), *range(16, 20)]
    still = [i for i in range(32) if i not in turned]
    assert torch.equal(proportional[..., still], x[..., still]) and not torch.equal(
        proportional[..., turned], x[..., turned]
    )
    assert torch.equal(leading[..., 8:], x[..., 8:]) and not torch.equal(leading[..., :8], x[..., :8])
    whole = RoPE(32, BASE, local=False).rotate(x, positions)
    assert torch.equal(proportional[..., turned], whole[..., turned])  # the whole-head frequencies


def test_rotate_equals_forward_on_keys():
    rope = _rope()
    q, k = torch.randn(1, 4, 6, 32), torch.randn(1, 2, 6, 32)
    positions = torch.arange(10, 16)
    assert torch.equal(rope.rotate(k, positions), rope(q, k, positions)[1])
