"""The train step's fast paths against what they replace: oneDNN linears vs `F.linear`, the hand-written RMSNorm and
gated-product backwards vs autograd's, the blocked window path's gradients vs the dense mask's, and checkpoints
saved with separate q/k/v and gate/up projections loading into the fused ones."""

import pytest
import torch
import torch.nn.functional as F

from tests.numerics import assert_close_to_reference, attention_terms
from workbench import build_model, get_preset
from workbench.blocks import attention, linear, mlp, norms
from workbench.blocks.attention import attend, attend_blocked_local, local_block_size, visible
from workbench.blocks.linear import matmul_kernel, uses_onednn
from workbench.checkpoints import load_model_from_checkpoint


def _grads(f, *inputs: torch.Tensor, seed: int = 0) -> list[torch.Tensor]:
    """f's output and the gradients of a random linear function of it w.r.t. `inputs`."""
    for x in inputs:
        x.grad = None
    out = f(*inputs)
    out.backward(torch.randn(out.shape, generator=torch.Generator().manual_seed(seed)))
    return [out.detach(), *(x.grad for x in inputs)]


def _leaf(*shape: int, transpose: bool = False) -> torch.Tensor:
    x = torch.randn(*shape)
    return (x.transpose(1, 2) if transpose else x).detach().requires_grad_()


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("shape", [(2, 5, 24), (7, 24)])
@pytest.mark.numerics
def test_onednn_linear_equals_f_linear_forward_and_backward(shape, bias):
    x, w = _leaf(*shape), _leaf(16, 24)
    b = _leaf(16) if bias else None
    assert uses_onednn(x, w) == (linear._onednn is not None)
    leaves = (x, w) + ((b,) if bias else ())
    fast = _grads(lambda x, w, *b: linear.linear(x, w, *b), *leaves)
    with matmul_kernel("aten"):
        reference = _grads(lambda x, w, *b: linear.linear(x, w, *b), *leaves)
    for a, r in zip(fast, reference, strict=True):  # the longest reduction: 24 input features
        assert_close_to_reference(a, r, terms=24)


def test_onednn_linear_falls_back_where_it_must():
    x, w = torch.randn(3, 8), torch.randn(4, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not uses_onednn(x, w)  # autocast casts F.linear's inputs; oneDNN would bypass it
    assert not uses_onednn(x.double(), w.double()) and not uses_onednn(x[:0], w)
    with matmul_kernel("aten"):
        assert not uses_onednn(x, w)
    with pytest.raises(ValueError, match="allowed: auto, aten"), matmul_kernel("mkl"):
        pass


@pytest.mark.parametrize("transpose", [False, True], ids=["contiguous", "heads-strided"])
@pytest.mark.parametrize("kind", ["gemma_rmsnorm", "rmsnorm"])
@pytest.mark.numerics
def test_rms_norm_backward_equals_autograd_of_the_composite(kind, transpose):
    norm = norms.GemmaRMSNorm(16, 1e-6) if kind == "gemma_rmsnorm" else norms.RMSNorm(16, 1e-6)
    with torch.no_grad():
        norm.weight.normal_(0.5, 0.3)
    offset = 1.0 if kind == "gemma_rmsnorm" else 0.0

    def composite(x, w):
        xf = x.float()
        return xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + 1e-6) * (offset + w)

    x = _leaf(2, 6, 3, 16, transpose=transpose)
    fast = _grads(lambda x, w: norm(x), x, norm.weight)
    reference = _grads(composite, x, norm.weight)
    for a, r in zip(fast, reference, strict=True):  # the longest reduction: the weight's gradient over 36 rows
        assert_close_to_reference(a, r, terms=36)


def test_rms_norm_dtypes_under_bfloat16():
    """Gemma scales in float32 then casts; Llama casts the normalised input, then the float32 weight promotes."""
    x = torch.randn(3, 8, dtype=torch.bfloat16)
    assert norms.GemmaRMSNorm(8, 1e-6)(x).dtype == torch.bfloat16
    assert norms.RMSNorm(8, 1e-6)(x).dtype == torch.float32


@pytest.mark.parametrize("gate", ["gelu_tanh", "silu"])
@pytest.mark.numerics
def test_gated_product_backward_equals_autograd(gate):
    act = mlp._GATES[gate][0]
    gate_up = _leaf(2, 5, 12, transpose=False)
    fast = _grads(lambda gu: mlp._GatedProduct.apply(gu, gate), gate_up)
    reference = _grads(lambda gu: act(gu[..., :6]) * gu[..., 6:], gate_up)
    for a, r in zip(fast, reference, strict=True):  # elementwise: tanh-GELU's ~10 operations and their derivative's
        assert_close_to_reference(a, r, terms=20)


@pytest.mark.parametrize(("block", "window"), [(3, 6), (8, 4), (6, 4), (4, 6)])
def test_key_blocks_equal_unfold_windows_and_pass_gradcheck(block, window):
    x = torch.randn(2, 24, 3, 2, dtype=torch.float64, requires_grad=True)  # (B, T, h, d)
    blocks = attention._KeyBlocks.apply(x, block, window)  # (B, T / b blocks, W + b keys, h, d)
    windows = F.pad(x, (0, 0, 0, 0, window, 0)).unfold(1, window + block, block).permute(0, 1, 4, 2, 3)
    torch.testing.assert_close(blocks, windows, rtol=0, atol=0)
    assert torch.autograd.gradcheck(lambda x: attention._KeyBlocks.apply(x, block, window), (x,))


@pytest.mark.parametrize("softcap", [None, 5.0])
@pytest.mark.parametrize(("length", "window"), [(256, 64), (67, 8), (16, 8), (9, 3), (64, 4)])
@pytest.mark.numerics
def test_blocked_local_gradients_equal_the_dense_mask(length, window, softcap):
    """Queries and keys laid out (B, T, h, d) in memory, as the model's projections leave them."""
    q, k, v = (
        _leaf(2, length, 4, 16, transpose=True),
        _leaf(2, length, 2, 16, transpose=True),
        _leaf(2, length, 2, 16, transpose=True),
    )
    pos = torch.arange(length)
    blocked = _grads(lambda *t: attend_blocked_local(*t, window, 0.25, softcap, 0.0), q, k, v)
    dense = _grads(lambda *t: attend(*t, visible(pos, pos, window), 0.25, softcap, 0.0), q, k, v)
    for a, r in zip(blocked, dense, strict=True):  # the gradients sum over as many queries as the softmax over keys
        assert_close_to_reference(a, r, terms=attention_terms(16, length))


def test_local_block_size():
    windows = (1024, 256, 128, 64, 32, 16, 8, 4, 3)
    assert [local_block_size(w) for w in windows] == [256, 64, 32, 32, 32, 16, 16, 16, 18]
    assert [local_block_size(w, torch.bfloat16) for w in windows] == [256, 64, 32, 32, 32, 16, 8, 4, 3]


def _split_state(state: dict[str, torch.Tensor], cfg) -> dict[str, torch.Tensor]:
    """The state dict as the model saved it before q/k/v and gate/up were fused."""
    q, kv = cfg.n_heads * cfg.resolved_head_dim, cfg.n_kv_heads * cfg.resolved_head_dim
    old = {}
    for name, tensor in state.items():
        if name.endswith("qkv_proj.weight"):
            old.update(zip([name.replace("qkv_proj", p) for p in ("q_proj", "k_proj", "v_proj")],
                           tensor.split([q, kv, kv]), strict=True))  # fmt: skip
        elif name.endswith("gate_up_proj.weight"):
            old.update(zip([name.replace("gate_up_proj", p) for p in ("gate_proj", "up_proj")], tensor.chunk(2),
                           strict=True))  # fmt: skip
        else:
            old[name] = tensor
    return old


@pytest.mark.parametrize("mlp_kind", ["geglu", "swiglu"])
def test_a_checkpoint_with_separate_projections_loads_into_the_fused_ones(tmp_path, mlp_kind):
    cfg = get_preset("tiny").replace(n_layers=2, d_model=32, n_heads=4, n_kv_heads=2, mlp_hidden=48, mlp=mlp_kind)
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    old = _split_state(model.state_dict(), cfg)
    assert "blocks.0.attn.k_proj.weight" in old and "blocks.1.mlp.up_proj.weight" in old
    path = tmp_path / "old.ckpt"
    torch.save({"state_dict": {f"model.{k}": v for k, v in old.items()}, "model_config": cfg.to_dict()}, path)
    loaded = load_model_from_checkpoint(path)  # strict
    ids = torch.randint(0, cfg.vocab_size, (2, 9))
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids), model(ids), rtol=0, atol=0)
