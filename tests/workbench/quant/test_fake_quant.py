import pytest
import torch
from torch import nn

from workbench.model import build_model
from workbench.presets import get_preset
from workbench.quant.fake_quant import (
    FakeQuantLinear,
    export_model,
    export_weight,
    fake_quantize,
    prepare_fake_quant,
    quantize_model_ptq,
    quantize_weight,
    remove_fake_quant,
)
from workbench.quant.formats import FORMATS, get_format

QUANT = ["int4", "int4_block32", "fp8"]


@pytest.mark.parametrize("name", QUANT)
def test_error_within_half_a_step(name):
    """Integers: |error| <= scale / 2 (round to nearest); fp8 e4m3: half a unit in the last place."""
    fmt = get_format(name)
    w = torch.randn(16, 96) * torch.logspace(-3, 0, 16).unsqueeze(1)  # rows of very different magnitude
    codes, scale = quantize_weight(w, fmt)
    err = (fake_quantize(w, fmt) - w).abs()
    block = fmt.block_size or w.shape[1]
    step = scale.float().repeat_interleave(block, dim=1)[:, : w.shape[1]]
    if fmt.element == "int":
        assert codes.abs().max() <= 7
        assert (err <= step / 2 * (1 + 1e-3)).all()
    else:
        # 3 mantissa bits: relative error <= 2^-4; subnormals are spaced 2^-9 (in units of the scale)
        assert (err <= torch.maximum(w.abs() * 2**-4, step * 2**-10) * (1 + 1e-3)).all()


def test_block32_is_finer_than_per_channel():
    w = torch.randn(32, 256)
    w[:, 0] = 20  # one outlier per row ruins a per-row scale, but only its own block's
    err = {n: (fake_quantize(w, n) - w).pow(2).mean() for n in ("int4", "int4_block32")}
    assert err["int4_block32"] < err["int4"] / 5


def test_fp8_matches_torch_cast():
    x = torch.randn(4, 64) * 50
    x[:, 0] = 448.0  # the row maximum sets scale = 448 / 448 = 1, so the codes are a plain cast
    assert torch.equal(fake_quantize(x, "fp8"), x.to(torch.float8_e4m3fn).float())


@pytest.mark.parametrize("name", [*QUANT, "bf16"])
def test_straight_through_gradient(name):
    w = torch.randn(8, 64, requires_grad=True)
    x = torch.randn(5, 64)
    (x @ fake_quantize(w, name).T).square().sum().backward()
    q = fake_quantize(w, name).detach()
    assert not torch.equal(q, w.detach())
    # STE: d loss / d w is the gradient at the quantised weight, as if quantisation were the identity
    expected = 2 * (x @ q.T).T @ x
    torch.testing.assert_close(w.grad, expected)


@pytest.mark.parametrize("name", FORMATS)
@pytest.mark.parametrize("shape", [(8, 64), (5, 70), (3, 3)])
def test_export_bytes_and_round_trip(name, shape):
    w = torch.randn(shape)
    stored = export_weight(w, name)
    assert stored.data.dtype == torch.uint8
    assert stored.nbytes == get_format(name).matrix_bytes(*shape)
    assert torch.equal(stored.dequantize(), fake_quantize(w, name))


def test_int4_packing_is_two_codes_per_byte():
    w = torch.tensor([[7.0, -7.0, 1.0, 0.0]])  # scale 1: codes 7, -7, 1, 0
    stored = export_weight(w, "int4")
    assert stored.data.tolist() == [0x97, 0x01]  # low nibble first, two's complement
    assert stored.scales.float().tolist() == [[1.0]]


def tiny_model():
    return build_model(get_preset("tiny").replace(n_layers=2)).eval()


def test_prepare_swaps_linears_in_place_and_keeps_keys():
    model = tiny_model()
    keys, params = list(model.state_dict()), list(model.parameters())
    prepare_fake_quant(model, "int4")
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert linears and all(isinstance(m, FakeQuantLinear) for m in linears)
    assert list(model.state_dict()) == keys and list(model.parameters()) == params
    remove_fake_quant(model)
    assert not any(isinstance(m, FakeQuantLinear) for m in model.modules())


def test_fake_quant_forward_equals_ptq():
    x = torch.randint(0, 256, (2, 16))
    model = tiny_model()
    ptq = tiny_model()
    ptq.load_state_dict(model.state_dict())
    quantize_model_ptq(ptq, "int4_block32", embedding=True)
    prepare_fake_quant(model, "int4_block32", embedding=True)
    torch.testing.assert_close(model(x), ptq(x))
    remove_fake_quant(model)  # back to the latent weights
    assert not torch.allclose(model(x), ptq(x))


def test_int4_changes_tiny_logits_by_a_bounded_amount():
    x = torch.randint(0, 256, (2, 32))
    model = tiny_model()
    ref = model(x)
    change = {}
    for name in ("bf16", "fp8", "int4"):
        q = tiny_model()
        q.load_state_dict(model.state_dict())
        change[name] = (quantize_model_ptq(q, name, embedding=True)(x) - ref).abs().max().item()
    assert 0 < change["bf16"] < change["fp8"] < change["int4"] < 0.5 * ref.abs().max().item()


def test_export_model_counts_tied_embedding_once():
    model = tiny_model()
    stored = export_model(prepare_fake_quant(model, "int4", embedding=True), "int4", embedding=True)
    assert "embed.weight" in stored and not any("lm_head" in k for k in stored)
    expected = sum(get_format("int4").matrix_bytes(*p.shape) for n, p in model.named_parameters() if p.dim() == 2)
    assert sum(s.nbytes for s in stored.values()) == expected
    assert torch.equal(stored["embed.weight"].dequantize(), model.embed.weight)  # the parametrised weight
