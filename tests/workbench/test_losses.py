"""The chunked cross-entropy against F.cross_entropy of float32 logits, and its gradient by gradcheck."""

import pytest
import torch
import torch.nn.functional as F

from tests.numerics import assert_close_to_reference
from workbench import losses
from workbench.data.bundle import IGNORE
from workbench.losses import cross_entropy_sum

pytestmark = pytest.mark.numerics  # every test here compares floating-point results


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
    assert_close_to_reference(loss, ref, terms=11 + 18)  # the log-sum-exp over 11 logits, the sum over 18 rows
    # float32: a softmax over 11 logits; bfloat16: one rounding of that float32 gradient
    assert_close_to_reference(grad, ref_logits.grad.to(dtype), terms=11 if dtype == torch.float32 else 1)


def test_cross_entropy_sum_passes_gradcheck():
    logits = torch.randn(3, 4, 5, dtype=torch.float64, requires_grad=True)
    y = _targets((3, 4), 5)
    assert torch.autograd.gradcheck(lambda z: cross_entropy_sum(z, y), (logits,))
