"""LMModule with the training-side knobs: the z-loss added to the objective (and logged apart from train/loss), and
document masking on training and validation batches; both end to end through the CLI's training path."""

import json

import pytest
import torch

from tests.workbench.train_helpers import FAST, compose_cfg
from workbench import get_preset
from workbench.blocks.documents import DocumentMasking
from workbench.data import byte_tokenizer
from workbench.losses import cross_entropy_sum
from workbench.training.errors import ConfigError
from workbench.training.jobs import train
from workbench.training.module import LMModule
from workbench.training.validate import validate

OPTIM = dict(lr=1e-3, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1, schedule="constant", warmup_steps=1,
             total_steps=10, min_lr_ratio=0.1, decay_fraction=0.2)  # fmt: skip
CFG = get_preset("tiny").replace(n_layers=2, d_model=32, mlp_hidden=64, window=4)
SEP = byte_tokenizer.EOS


class _Trainer:
    log_every_n_steps = 5


def _module(monkeypatch, **kwargs) -> tuple[LMModule, dict]:
    module = LMModule(CFG, {**OPTIM, **kwargs.pop("optim", {})}, **kwargs)
    logged: dict = {}
    monkeypatch.setattr(LMModule, "trainer", _Trainer())
    monkeypatch.setattr(LMModule, "global_step", 3)
    monkeypatch.setattr(module, "log", lambda name, value, **_: logged.__setitem__(name, value))
    monkeypatch.setattr(module, "optimizers", lambda: torch.optim.SGD(module.parameters(), lr=0.1))
    return module, logged


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.randint(0, 256, (2, 16), generator=torch.Generator().manual_seed(0))
    x[:, 6] = SEP
    return x, torch.roll(x, -1, dims=1)


@torch.no_grad()
def test_z_loss_joins_the_objective_and_is_logged_apart(monkeypatch):
    module, logged = _module(monkeypatch, optim={"z_loss": 1e-2})
    x, y = _batch()
    objective = module.training_step((x, y), 0)
    logits = module.model(x).double()
    ce = cross_entropy_sum(logits, y) / y.numel()
    z = 1e-2 * torch.logsumexp(logits, -1).square().mean()
    assert float(logged["train/loss"]) == pytest.approx(float(ce), rel=1e-5)
    assert float(logged["train/z_loss"]) == pytest.approx(float(z), rel=1e-5)
    assert float(objective) == pytest.approx(float(ce + z), rel=1e-5)


def test_without_a_coefficient_nothing_changes(monkeypatch):
    module, logged = _module(monkeypatch)
    x, y = _batch()
    objective = module.training_step((x, y), 0)
    assert "train/z_loss" not in logged and objective is logged["train/loss"]


@torch.no_grad()
def test_document_masking_applies_to_training_and_validation(monkeypatch):
    masking = DocumentMasking(SEP)
    module, logged = _module(monkeypatch, documents=masking)
    x, y = _batch()
    module.training_step((x, y), 0)
    masked = cross_entropy_sum(module.model(x, documents=masking(x)), y) / y.numel()
    assert float(logged["train/loss"]) == pytest.approx(float(masked), rel=1e-6)
    assert float(masked) != pytest.approx(float(cross_entropy_sum(module.model(x), y) / y.numel()), rel=1e-4)
    module.on_validation_epoch_start()
    module.validation_step((x, y), 0)
    assert module.val_sums["nats"].compute().item() == pytest.approx(float(masked) * y.numel(), rel=1e-6)


def test_a_run_with_document_masking_and_z_loss_trains(tmp_path):
    """The stdlib source's EOS splits documents; results.json records the run; the z-loss is in the CSV log."""
    cfg = compose_cfg(["logger=csv", "trainer.max_steps=4", "trainer.val_check_interval=4", "data.document_mask=true",
                       "data.document_positions=continue", "optim.z_loss=1e-4", *FAST], tmp_path / "cache")  # fmt: skip
    train(cfg, tmp_path / "run")
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["val_loss"] < 6 and results["selection_loss"] < 6
    metrics = next((tmp_path / "run").rglob("metrics.csv")).read_text()
    assert "train/z_loss" in metrics.splitlines()[0]


def test_document_mask_needs_a_separator():
    with pytest.raises(ConfigError, match=r"data.document_mask: got true; allowed: false with data=hf unless"):
        validate(compose_cfg(["data=hf", "data.name=x", "data.tokenizer=/", "data.document_mask=true"], None))
