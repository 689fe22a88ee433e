import pytest
import torch

from workbench.blocks.attention import attend, attend_blocked_local, self_attention, visible


@pytest.mark.parametrize("softcap", [None, 5.0])
@pytest.mark.parametrize(("length", "window"), [(64, 8), (67, 8), (16, 8), (9, 3)])
def test_blocked_local_equals_masked_dense(length, window, softcap):
    q, k, v = torch.randn(2, 4, length, 16), torch.randn(2, 2, length, 16), torch.randn(2, 2, length, 12)
    pos = torch.arange(length)
    dense = attend(q, k, v, visible(pos, pos, window), 0.25, softcap, 0.0)
    torch.testing.assert_close(attend_blocked_local(q, k, v, window, 0.25, softcap, 0.0), dense)


@pytest.mark.parametrize("softcap", [None, 5.0])
@pytest.mark.parametrize("window", [None, 4, 40])
def test_dispatch_equals_explicit_mask(window, softcap):
    q, k, v = torch.randn(1, 2, 20, 8), torch.randn(1, 1, 20, 8), torch.randn(1, 1, 20, 8)
    pos = torch.arange(20)
    expected = attend(q, k, v, visible(pos, pos, window), 0.3, softcap, 0.0)
    torch.testing.assert_close(self_attention(q, k, v, pos, pos, window, 0.3, softcap, 0.0), expected)


def test_visible_window_semantics():
    pos = torch.arange(6)
    mask = visible(pos, pos, 3)
    assert mask[5].tolist() == [False, False, False, True, True, True]
    assert mask[1].tolist() == [True, True, False, False, False, False]
