"""LMModule: steps and validation batches that never wait on the device, and a NaN loss reported at the step it
appeared at whatever the log interval."""

import json

import pytest
import torch

from tests.workbench.train_helpers import FAST, compose_cfg
from workbench import get_preset
from workbench.data.bundle import IGNORE
from workbench.losses import cross_entropy_sum
from workbench.training.jobs import train
from workbench.training.module import LMModule, NonFiniteLossError

OPTIM = dict(lr=1e-3, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1, schedule="constant", warmup_steps=1,
             total_steps=10, min_lr_ratio=0.1, decay_fraction=0.2)  # fmt: skip


def _targets(shape: tuple[int, ...], vocab: int) -> torch.Tensor:
    y = torch.randint(0, vocab, shape)
    y[0, :3] = IGNORE
    return y


class _NoSync:
    """Make every host read of a tensor's value an error (what would stall a GPU run at each batch)."""

    def __enter__(self) -> None:
        self.saved = {
            name: getattr(torch.Tensor, name) for name in ("item", "tolist", "__bool__", "__float__", "__int__")
        }
        for name in self.saved:
            setattr(torch.Tensor, name, lambda *a, name=name: pytest.fail(f"host sync: Tensor.{name}"))

    def __exit__(self, *exc) -> None:
        for name, method in self.saved.items():
            setattr(torch.Tensor, name, method)


class _Trainer:
    log_every_n_steps = 5


def test_train_and_validation_steps_do_not_wait_on_the_device(monkeypatch):
    cfg = get_preset("tiny").replace(n_layers=1, d_model=32, mlp_hidden=64)
    module = LMModule(cfg, OPTIM, token_bytes=torch.ones(cfg.vocab_size, dtype=torch.long).numpy())
    monkeypatch.setattr(LMModule, "trainer", _Trainer())
    monkeypatch.setattr(LMModule, "global_step", 3)  # not a log step
    monkeypatch.setattr(module, "log", lambda *a, **k: None)
    monkeypatch.setattr(module, "optimizers", lambda: torch.optim.SGD(module.parameters(), lr=0.1))
    batch = (torch.randint(0, cfg.vocab_size, (2, 8)), _targets((2, 8), cfg.vocab_size))
    module.on_validation_epoch_start()
    with _NoSync():
        module.training_step(batch, 0)
        for _ in range(2):
            module.validation_step(batch, 0)
    nats = cross_entropy_sum(module.model(batch[0]), batch[1]).item()
    assert module.val_sums["nats"].compute().item() == pytest.approx(2 * nats, rel=1e-6)
    assert module.val_sums["targets"].compute().item() == module.val_sums["bytes"].compute().item() == 2 * 13


def test_a_nan_loss_is_raised_at_the_log_interval_with_the_step_it_appeared_at(monkeypatch):
    cfg = get_preset("tiny").replace(n_layers=1, d_model=32, mlp_hidden=64)
    module = LMModule(cfg, OPTIM)
    monkeypatch.setattr(LMModule, "trainer", _Trainer())
    monkeypatch.setattr(module, "log", lambda *a, **k: None)
    monkeypatch.setattr(module, "optimizers", lambda: torch.optim.SGD(module.parameters(), lr=0.1))
    batch = (torch.randint(0, cfg.vocab_size, (2, 8)), _targets((2, 8), cfg.vocab_size))
    for step in range(6, 10):  # log steps: multiples of 5
        monkeypatch.setattr(LMModule, "global_step", step)
        if step == 7:
            with torch.no_grad():
                module.model.embed.weight.fill_(float("nan"))
        module.training_step(batch, 0)  # steps 7-9 are not log steps: no raise
    assert module.last_train_loss != module.last_train_loss  # NaN
    with pytest.raises(NonFiniteLossError, match=r"train loss is nan at step 7$") as e:
        module.on_save_checkpoint({})  # nothing is checkpointed after a NaN
    assert e.value.step == 7


def test_failed_step_does_not_depend_on_the_log_interval(tmp_path):
    fast = [a for a in FAST if not a.startswith("trainer.log_every_n_steps=")]
    common = ["logger=none", "trainer.max_steps=8", "trainer.val_check_interval=8", "optim.lr=1.0e30", *fast]
    steps = []
    for every in (1, 5):
        with pytest.raises(NonFiniteLossError):
            train(
                compose_cfg([*common, f"trainer.log_every_n_steps={every}"], tmp_path / "cache"), tmp_path / f"{every}"
            )
        steps.append(json.loads((tmp_path / f"{every}" / "results.json").read_text())["failed_step"])
    assert steps[0] == steps[1] >= 1


@pytest.mark.parametrize("algorithm", ["norm", "value"])
def test_a_fused_adamw_clips_with_torch_exactly(algorithm):
    """Lightning refuses to clip for a fused optimizer; the module clips it itself, as torch's own functions do."""
    torch.manual_seed(0)
    module = LMModule(get_preset("tiny").replace(n_layers=1), OPTIM)
    for p in module.parameters():
        p.grad = torch.randn_like(p)
    params = list(module.parameters())
    expected = [p.grad.clone() for p in params]
    clip = torch.nn.utils.clip_grad_norm_ if algorithm == "norm" else torch.nn.utils.clip_grad_value_
    reference = [torch.nn.Parameter(torch.zeros_like(g)) for g in expected]
    for r, g in zip(reference, expected, strict=True):
        r.grad = g.clone()
    clip(reference, 0.5)
    optimizer = torch.optim.AdamW(params, fused=True)
    module.configure_gradient_clipping(optimizer, 0.5, algorithm)
    for p, r in zip(params, reference, strict=True):
        torch.testing.assert_close(p.grad, r.grad, rtol=0, atol=0)
    assert any(not torch.equal(p.grad, g) for p, g in zip(params, expected, strict=True)), "nothing was clipped"
