import warnings

import pytest
import torch

from tests.numerics import assert_close_to_reference, attention_terms
from workbench import build_model, get_preset
from workbench.blocks.attention import (
    attend,
    attend_blocked_local,
    attend_flex,
    attention_path,
    auto_kernel,
    self_attention,
    visible,
)


@pytest.mark.parametrize("softcap", [None, 5.0])
@pytest.mark.parametrize(("length", "window"), [(64, 8), (67, 8), (16, 8), (9, 3)])
@pytest.mark.numerics
def test_blocked_local_equals_masked_dense(length, window, softcap):
    q, k, v = torch.randn(2, 4, length, 16), torch.randn(2, 2, length, 16), torch.randn(2, 2, length, 12)
    pos = torch.arange(length)
    dense = attend(q, k, v, visible(pos, pos, window), 0.25, softcap, 0.0)
    assert_close_to_reference(attend_blocked_local(q, k, v, window, 0.25, softcap, 0.0), dense,
                              terms=attention_terms(16, length))  # fmt: skip


@pytest.mark.parametrize("softcap", [None, 5.0])
@pytest.mark.parametrize("window", [None, 4, 40])
@pytest.mark.numerics
def test_dispatch_equals_explicit_mask(window, softcap):
    q, k, v = torch.randn(1, 2, 20, 8), torch.randn(1, 1, 20, 8), torch.randn(1, 1, 20, 8)
    pos = torch.arange(20)
    expected = attend(q, k, v, visible(pos, pos, window), 0.3, softcap, 0.0)
    assert_close_to_reference(self_attention(q, k, v, pos, pos, window, 0.3, softcap, 0.0), expected,
                              terms=attention_terms(8, 20))  # fmt: skip


def test_visible_window_semantics():
    pos = torch.arange(6)
    mask = visible(pos, pos, 3)
    assert mask[5].tolist() == [False, False, False, True, True, True]
    assert mask[1].tolist() == [True, True, False, False, False, False]


@pytest.mark.parametrize(
    ("device", "length", "window", "softcap", "dropout", "kernel"),
    [
        ("cpu", 64, None, None, 0.0, "causal"), ("cpu", 64, 64, None, 0.0, "causal"),
        ("cpu", 64, 16, None, 0.0, "blocked"), ("cpu", 67, 16, None, 0.0, "masked"),
        ("cpu", 24, 16, None, 0.0, "masked"), ("cpu", 64, None, 50.0, 0.0, "causal"),
        ("cuda", 64, None, None, 0.0, "causal"), ("cuda", 64, 16, None, 0.0, "flex"),
        ("cuda", 67, 16, None, 0.0, "flex"), ("cuda", 64, None, 50.0, 0.0, "flex"),
        ("cuda", 64, 64, None, 0.0, "causal"), ("cuda", 64, 16, None, 0.1, "blocked"),
    ],
)  # fmt: skip
def test_auto_kernel_choice(device, length, window, softcap, dropout, kernel):
    assert auto_kernel(device, length, window, softcap, dropout) == kernel


def _qkv(length: int, device: str, dtype: torch.dtype, grad: bool = True) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    shapes = [(2, 4, length, 16), (2, 2, length, 16), (2, 2, length, 16)]
    return [torch.randn(s, generator=g).to(device, dtype).requires_grad_(grad) for s in shapes]


def _forward_and_grads(fn, q, k, v) -> list[torch.Tensor]:
    out = fn(q, k, v)
    weights = torch.linspace(-1, 1, out.shape[-1], device=out.device)
    return [out, *torch.autograd.grad((out.float() * weights).sum(), (q, k, v))]


@pytest.mark.parametrize("softcap", [None, 5.0])
@pytest.mark.parametrize(("length", "window"), [(64, 16), (40, 16), (64, None)])
@pytest.mark.numerics
def test_flex_equals_dense_on_cpu(length, window, softcap):
    """Eager flex_attention on CPU (the kernel the CUDA auto path compiles; no backward on CPU) vs the mask."""
    q, k, v = _qkv(length, "cpu", torch.float32, grad=False)
    pos = torch.arange(length)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # flex's eager-mode notice on CPU
        flex = attend_flex(q, k, v, window, 0.25, softcap)
    dense = attend(q, k, v, visible(pos, pos, window), 0.25, softcap, 0.0)
    assert_close_to_reference(flex, dense, terms=attention_terms(16, length))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA: the auto path runs compiled flex/flash there")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("softcap", [None, 50.0])
@pytest.mark.parametrize(("length", "window"), [(512, 128), (300, 128), (256, None)])
def test_cuda_auto_path_equals_dense_forward_and_gradients(length, window, softcap, dtype):
    q, k, v = _qkv(length, "cuda", dtype)
    pos = torch.arange(length, device="cuda")
    auto = _forward_and_grads(lambda *t: self_attention(*t, pos, pos, window, 0.25, softcap, 0.0), q, k, v)
    with attention_path("dense"):
        dense = _forward_and_grads(lambda *t: self_attention(*t, pos, pos, window, 0.25, softcap, 0.0), q, k, v)
    tol = {"atol": 2e-2, "rtol": 2e-2} if dtype == torch.bfloat16 else {"atol": 1e-4, "rtol": 1e-4}
    for a, b in zip(auto, dense, strict=True):
        torch.testing.assert_close(a, b, **tol)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA: the auto path runs compiled flex/flash there")
def test_cuda_model_auto_path_equals_dense_logits_and_gradients():
    """A 5:1 model on CUDA: local layers through flex, the global layer through flash; the dense mask as reference."""
    cfg = get_preset("tiny").replace(window=32)
    model = build_model(cfg).cuda()
    ids = torch.randint(0, cfg.vocab_size, (2, 256), device="cuda")

    def run() -> list[torch.Tensor]:
        model.zero_grad()
        logits = model(ids)
        logits.float().logsumexp(-1).sum().backward()
        return [logits.detach()] + [p.grad.clone() for p in model.parameters() if p.grad is not None]

    auto = run()
    with attention_path("dense"):
        dense = run()
    for a, b in zip(auto, dense, strict=True):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


@pytest.mark.numerics
def test_flex_casts_float32_queries_and_keys_to_the_values_dtype():
    """Under bf16 autocast a plain RMSNorm returns float32 q/k beside bf16 v: flex (no autocast op) must cope."""
    q, k, v = _qkv(64, "cpu", torch.float32, grad=False)
    pos = torch.arange(64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = attend_flex(q, k, v.bfloat16(), 16, 0.25, None)
    expected = attend(q.bfloat16(), k.bfloat16(), v.bfloat16(), visible(pos, pos, 16), 0.25, None, 0.0)
    assert out.dtype == torch.bfloat16
    assert_close_to_reference(out, expected, terms=3)  # bf16 roundings: the scores, the probabilities, the output


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA: the auto path runs compiled flex/flash there")
@pytest.mark.parametrize("norm", ["gemma_rmsnorm", "rmsnorm"])
def test_cuda_bf16_autocast_auto_path_equals_dense(norm):
    cfg = get_preset("tiny").replace(window=32, norm=norm, attn_logit="softcap+qk_norm")
    model = build_model(cfg).cuda()
    ids = torch.randint(0, cfg.vocab_size, (2, 256), device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16), torch.no_grad():
        auto = model(ids).float()
        with attention_path("dense"):
            dense = model(ids).float()
    torch.testing.assert_close(auto, dense, atol=5e-2, rtol=5e-2)
