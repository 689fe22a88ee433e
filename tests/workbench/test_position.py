import pytest
import torch
from transformers import Gemma3TextConfig
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

from workbench import build_model, get_preset
from workbench.blocks.position import rope_frequencies

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
    torch.testing.assert_close(ours, theirs)
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
    torch.testing.assert_close(yarn[-4:], plain[-4:] / 8.0)


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
