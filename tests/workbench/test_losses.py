"""The chunked cross-entropy against F.cross_entropy of float32 logits, and its gradient by gradcheck."""

import pytest
import torch
import torch.nn.functional as F

from workbench import losses
from workbench.data.bundle import IGNORE
from workbench.losses import cross_entropy_sum


def _targets(shape: tuple[int, ...], vocab: int) -> torch.Tensor:
    y = torch.randint(0, vocab, shape)
    y[0, :3] = IGNORE
    return y


@pytest.mark.parametrize("chunk", [1 << 20, 7 * 11], ids=["one chunk", "rows in chunks"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cross_entropy_sum_equals_f_cross_entropy_of_float32_logits(dtype, chunk, monkeypatch):
    monkeypatch.setattr(losses, "CE_CHUNK_ELEMENTS", chunk)
    logits = (3 * torch.randn(2, 9, 11)).to(dtype).requires_grad_()
    y = _targets((2, 9), 11)
    loss = cross_entropy_sum(logits, y)
    (grad,) = torch.autograd.grad(loss, logits)
    ref_logits = logits.detach().float().requires_grad_()
    ref = F.cross_entropy(ref_logits.flatten(0, 1), y.flatten(), ignore_index=IGNORE, reduction="sum")
    ref.backward()
    assert loss.dtype == torch.float32 and grad.dtype == dtype
    torch.testing.assert_close(loss, ref)
    torch.testing.assert_close(grad, ref_logits.grad.to(dtype))


def test_cross_entropy_sum_passes_gradcheck():
    logits = torch.randn(3, 4, 5, dtype=torch.float64, requires_grad=True)
    y = _targets((3, 4), 5)
    assert torch.autograd.gradcheck(lambda z: cross_entropy_sum(z, y), (logits,))
