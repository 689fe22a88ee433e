from types import SimpleNamespace

import pytest
import torch

from workbench import timing
from workbench.model import build_model
from workbench.presets import get_preset


def _tiny():
    cfg = get_preset("tiny").replace(n_layers=2)
    return cfg, build_model(cfg), torch.randint(0, cfg.vocab_size, (2, 16))


def test_train_step_returns_the_loss_before_the_update_and_leaves_no_gradients():
    _, model, x = _tiny()
    with torch.no_grad():
        expected = timing.next_token_loss(model, x)
    before = [p.detach().clone() for p in model.parameters()]
    loss = timing.train_step(model, torch.optim.AdamW(model.parameters(), lr=1e-3), x)
    torch.testing.assert_close(loss, expected)
    assert not loss.requires_grad and all(p.grad is None for p in model.parameters())
    assert all(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


def test_next_token_loss_predicts_the_following_token():
    """Logits that put all mass on x[t + 1] at position t give zero loss; shifted by one they would not."""
    x = torch.tensor([[3, 1, 4, 1, 5]])
    perfect = torch.nn.functional.one_hot(x.roll(-1, dims=1), 8).float() * 100
    assert timing.next_token_loss(lambda _: perfect, x) < 1e-6
    assert timing.next_token_loss(lambda _: torch.nn.functional.one_hot(x, 8).float() * 100, x) > 10


def test_clip_norm_bounds_the_update():
    _, model, x = _tiny()
    before = torch.cat([p.detach().flatten() for p in model.parameters()])
    timing.train_step(model, torch.optim.SGD(model.parameters(), lr=1.0), x, clip_norm=1e-3)
    after = torch.cat([p.detach().flatten() for p in model.parameters()])
    assert (after - before).norm() <= 1e-3 * 1.001


def test_bf16_mixed_autocasts_the_forward_only():
    _, model, x = _tiny()
    dtypes = []

    def loss_fn(m, x):
        logits = m(x)
        dtypes.append(logits.dtype)
        return timing.next_token_loss(lambda _: logits, x)

    loss = timing.train_step(model, torch.optim.AdamW(model.parameters()), x, "bf16-mixed", loss_fn)
    assert dtypes == [torch.bfloat16] and loss.dtype == torch.float32
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_unknown_precision_names_the_allowed_ones():
    _, model, x = _tiny()
    with pytest.raises(ValueError, match="precision: got 'transformer-engine'; allowed here: 32-true, bf16-mixed"):
        timing.train_step(model, torch.optim.AdamW(model.parameters()), x, "transformer-engine")


def test_time_train_steps_times_only_the_steps_after_warmup(monkeypatch):
    """A clock that only the steps advance: the warmup steps cost 5 s each, the timed ones 0.02 s."""
    calls, clock = [], SimpleNamespace(now=0.0)

    def slow_step(model, optimizer, x, precision):
        calls.append((precision, next(model.parameters()).dtype, tuple(x.shape)))
        clock.now += 5.0 if len(calls) <= 2 else 0.02

    monkeypatch.setattr(timing, "time", SimpleNamespace(perf_counter=lambda: clock.now))
    monkeypatch.setattr(timing, "train_step", slow_step)
    monkeypatch.setattr(timing, "resolve_precision", lambda requested, device: ("bf16-true", "test"))
    seconds = timing.time_train_steps(get_preset("tiny"), 3, 8, "auto", steps=3, warmup=2)
    assert calls == [("bf16-true", torch.bfloat16, (3, 8))] * 5
    assert seconds == pytest.approx(0.02, rel=1e-9)


def test_time_train_steps_rejects_no_steps():
    with pytest.raises(ValueError, match="steps, warmup: got 0, 1"):
        timing.time_train_steps(get_preset("tiny"), 1, 8, "32-true", steps=0)
