"""`init_from`: weights only from a run dir into a model with a longer context, shape checks, and first stages."""

import re
import sys

import pytest
import torch
from omegaconf import OmegaConf

import workbench.train
from tests.workbench.train_helpers import FAST, compose_cfg
from workbench import build_model
from workbench.checkpoints import CorruptCheckpointError, load_model_from_checkpoint, load_weights
from workbench.distill import load_teacher
from workbench.training.errors import ConfigError
from workbench.training.jobs import train
from workbench.training.plan import STAGES

SHORT = ["logger=none", "trainer.max_steps=2", "trainer.val_check_interval=2", "model.layer_pattern=1:1",
         "model.window=16", "model.max_seq_len=32", *FAST, "data.seq_len=32"]  # fmt: skip


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pretrained")
    train(compose_cfg(SHORT, tmp / "cache"), tmp / "run")
    return tmp / "run"


def test_weights_load_into_a_longer_context_and_give_the_same_logits(pretrained):
    source = load_model_from_checkpoint(pretrained)
    longer = build_model(source.cfg.replace(max_seq_len=128, rope_scaling_type="yarn", rope_original_context=32))
    load_weights(longer, pretrained)
    x = torch.randint(0, 256, (2, 64))
    torch.testing.assert_close(longer.eval()(x), source(x), rtol=0, atol=0)  # factor 1: the same model
    scaled = build_model(longer.cfg.replace(rope_scaling_global=4.0))
    load_weights(scaled, pretrained)
    assert _same_weights(scaled, source)
    assert not torch.allclose(scaled.eval()(x), source(x))  # the global layers' RoPE changed, the weights did not


def test_a_shape_mismatch_names_the_parameter(pretrained):
    source = load_model_from_checkpoint(pretrained)
    with pytest.raises(
        ValueError, match=r"blocks\.0\.mlp\.\w+\.weight: \(\d+, 64\) in the checkpoint, \(\d+, 64\) here"
    ):
        load_weights(build_model(source.cfg.replace(mlp_hidden=96)), pretrained)
    with pytest.raises(ValueError, match=r"missing: \['blocks\.2\."):
        load_weights(build_model(source.cfg.replace(n_layers=3)), pretrained)


def test_a_run_continues_from_the_weights_not_the_step(pretrained, tmp_path):
    # lr 1e-30: one optimiser step that changes no weight, so the run's final weights are the ones it started from
    longer = ["model.max_seq_len=128", "data.seq_len=128", "trainer.max_steps=1", "trainer.val_check_interval=1",
              "optim.warmup_steps=0", "optim.lr=1e-30", f"init_from={pretrained}"]  # fmt: skip
    results = train(compose_cfg([*SHORT, *longer], pretrained.parent / "cache"), tmp_path / "long")
    assert results["steps"] == 1 and results["init_from"] == str(pretrained / "checkpoints" / "last.ckpt")
    trained, source = load_model_from_checkpoint(tmp_path / "long"), load_model_from_checkpoint(pretrained)
    assert trained.cfg.max_seq_len == 128
    assert _same_weights(trained, source)


def test_a_first_stage_is_trained_once_and_shared(tmp_path):
    cfg = compose_cfg([*SHORT, "model.max_seq_len=64", "data.seq_len=64", "long_context.buckets=4"], tmp_path / "c")
    stage = {"model.max_seq_len": 32, "data.seq_len": 32, "model.rope_scaling_global": 1.0}
    OmegaConf.update(cfg, "init_from", stage, merge=False)
    first = train(cfg, tmp_path / "sweep" / "a")
    (stage,) = (tmp_path / "sweep" / STAGES).glob("run_s0_*/")
    assert first["init_from"] == str(stage / "checkpoints" / "last.ckpt")
    assert OmegaConf.load(stage / "config.yaml").data.seq_len == 32
    assert [b["end"] for b in first["long_context"]["position_buckets"]] == [16, 32, 48, 64]
    mtime = (stage / "results.json").stat().st_mtime_ns
    OmegaConf.update(cfg, "model.rope_scaling_global", 2.0)  # another arm, whose first stage is the same
    second = train(cfg, tmp_path / "sweep" / "b")
    assert second["init_from"] == first["init_from"] and (stage / "results.json").stat().st_mtime_ns == mtime


def test_unknown_keys_in_a_first_stage_are_rejected_before_training(tmp_path):
    cfg = compose_cfg(SHORT, tmp_path / "c")
    OmegaConf.update(cfg, "init_from", {"model.widht": 3}, merge=False)
    with pytest.raises(ConfigError, match=r"init_from \(first stage\): unknown config key 'model.widht'"):
        train(cfg, tmp_path / "run")
    assert not (tmp_path / STAGES).exists()


def test_an_unreadable_checkpoint_to_start_from_is_an_error_naming_it(tmp_path, monkeypatch, capsys):
    """init_from and distill.teacher load through one reader: garbage bytes end the run with one `error:` line."""
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"garbage")
    with pytest.raises(CorruptCheckpointError, match=r"checkpoint .*bad\.ckpt is unreadable"):
        load_teacher(bad)
    run_dir = tmp_path / "run"
    argv = [*SHORT, f"init_from={bad}", f"hydra.run.dir={run_dir}", f"data.cache_dir={tmp_path / 'cache'}"]
    monkeypatch.setattr(sys, "argv", ["workbench.train", *argv])
    with pytest.raises(SystemExit) as e:
        workbench.train.main()
    assert e.value.code == 2  # opened before the run dir exists (training.preflight)
    err = capsys.readouterr().err
    assert re.match(r"error: init_from: checkpoint .*bad\.ckpt is unreadable", err) and "Traceback" not in err
    assert not run_dir.exists()
