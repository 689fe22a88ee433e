"""Distillation in the training loop: config checks, teachers (workbench checkpoint, transformers dir, trained on
first use), the KD loss going down, cached targets shared by students. The grids run in test_ablation_grids."""

import json

import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf

import workbench.distill
import workbench.training.run as training_run
from tests.numerics import assert_close_to_reference, transformer_terms
from tests.workbench.train_helpers import FAST, compose_cfg
from workbench.accounting import param_counts
from workbench.checkpoints import MODEL_CONFIG_KEY, load_model_from_checkpoint
from workbench.config import ModelConfig
from workbench.data import build_data
from workbench.distill import Distiller, load_teacher, row_key
from workbench.interop import to_hf
from workbench.model import build_model
from workbench.training.errors import ConfigError
from workbench.training.jobs import train
from workbench.training.module import LMModule
from workbench.training.sweep import planned_jobs
from workbench.training.validate import validate

BASE = [*FAST, "logger=none", "trainer.val_check_interval=100"]


def _cfg(tmp_path, *overrides):
    return compose_cfg([*BASE, *overrides, f"distill.cache_dir={tmp_path / 'distill'}"], None)


def _model_cfg(cfg) -> ModelConfig:
    return ModelConfig.from_dict(dict(cfg.model))


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory):
    """A workbench run trained for a few steps: the teacher of the tests below."""
    out = tmp_path_factory.mktemp("teacher")
    train(compose_cfg([*BASE, "trainer.max_steps=15"], None), out / "run")
    return out / "run"


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["distill.kind=kl"], "distill.kind: got 'kl'.*; allowed: none, sampled, topk, full"),
        (["distill=sampled", "distill.k=0", "distill.teacher_model=tiny"], "distill.k: got 0"),
        (
            ["distill=full", "distill.alpha=1.5", "distill.teacher_model=tiny"],
            r"distill.alpha: got 1.5.*; allowed: a number in",
        ),
        (["distill=full"], "exactly one of them"),
        (["distill=full", "distill.teacher=/no/such/run", "distill.teacher_model=tiny"], "exactly one of them"),
        (["distill=full", "distill.teacher=/no/such/run"], "/no/such/run does not exist"),
        (["distill=full", "distill.teacher=hf:/no/such/dir"], "/no/such/dir does not exist"),
        (["distill=full", "distill.cache=true", "distill.teacher_model=tiny"], "distill.cache: got True"),
        (
            ["distill=full", "distill.teacher_model=tiny", "distill.teacher_lr=0"],
            r"distill.teacher_lr: got 0.*; allowed: null or a finite number > 0",
        ),
        (["distill=full", "distill.teacher_model=huge"], "distill.teacher_model: got 'huge'; allowed: a preset"),
        (["distill=full", "distill.teacher_model={layers: 4}"], "distill.teacher_model: got .*allowed: a preset"),
    ],
)
def test_bad_distill_keys_fail_before_any_compute(tmp_path, overrides, message):
    if overrides == ["distill.kind=kl"]:  # composition itself rejects an unknown choice
        with pytest.raises(ConfigError, match=message):
            planned_jobs([*BASE, *overrides], multirun=False)
        return
    cfg = _cfg(tmp_path, *overrides)
    with pytest.raises(ConfigError, match=message):
        validate(cfg)
    with pytest.raises(ConfigError, match=message):
        train(cfg, tmp_path / "run")
    assert not (tmp_path / "run" / "checkpoints").exists() and not (tmp_path / "distill").exists()


def test_teacher_from_a_checkpoint_has_the_trained_weights(teacher_dir, tmp_path):
    ckpt = torch.load(teacher_dir / "checkpoints" / "last.ckpt", weights_only=False)
    reference = LMModule(ModelConfig.from_dict(ckpt[MODEL_CONFIG_KEY]), {})
    reference.load_state_dict(ckpt["state_dict"])  # Lightning's own way back into the module
    x = torch.randint(0, 256, (2, 32))
    with torch.no_grad():
        expected = reference.model.eval()(x)
        assert torch.equal(load_model_from_checkpoint(teacher_dir)(x), expected)
        # an older checkpoint without the model config: the run's config.yaml supplies it
        del ckpt[MODEL_CONFIG_KEY]
        (tmp_path / "checkpoints").mkdir()
        torch.save(ckpt, tmp_path / "checkpoints" / "old.ckpt")
        (tmp_path / "config.yaml").write_text((teacher_dir / "config.yaml").read_text())
        assert torch.equal(load_teacher(tmp_path / "checkpoints" / "old.ckpt")(x), expected)
    assert not any(p.requires_grad for p in load_teacher(teacher_dir).parameters())


def test_distillation_lowers_the_kd_loss_and_keeps_the_teacher_out_of_the_checkpoint(teacher_dir, tmp_path):
    cfg = _cfg(tmp_path, "distill=full", f"distill.teacher={teacher_dir}", "trainer.max_steps=12")
    results = train(cfg, tmp_path / "run")
    metrics = pd.read_csv(tmp_path / "run" / "metrics.csv")
    kd = metrics["train/kd_loss"].dropna().to_numpy()
    assert len(kd) == 12 and kd[-3:].mean() < kd[:3].mean() - 0.2, kd
    assert metrics["val/kd_loss"].notna().any() and results["status"] == "completed"
    state = torch.load(results["checkpoints"]["last"], weights_only=False)["state_dict"]
    n_student = sum(v.numel() for k, v in state.items() if k != "token_bytes")
    assert n_student == param_counts(_model_cfg(cfg))["total"] == results["params"]["total"]


def test_module_level_k_equal_to_vocab_matches_the_full_loss():
    torch.manual_seed(0)
    teacher_logits = torch.randn(2, 5, 264) * 2
    teacher = lambda x: teacher_logits  # noqa: E731
    student, x = torch.randn(2, 5, 264), torch.zeros(2, 5, dtype=torch.long)
    y = torch.randint(0, 264, (2, 5))
    y[0, 0] = -100
    full = Distiller(teacher, "full", 264, 0.0).kd_loss(student, x, y)
    topk = Distiller(teacher, "topk", 264, 0.0).kd_loss(student, x, y)
    assert_close_to_reference(topk, full, terms=2 * 264 + 10)  # softmax sums over the vocabulary, mean over rows
    assert abs(Distiller(teacher, "sampled", 20000, 0.0).kd_loss(student, x, y) - full) < 0.02
    assert torch.allclose(Distiller(teacher, "full", 264, 0.25).mix(full, torch.tensor(1.0)), 0.75 * full + 0.25)


def test_hf_teacher_saved_by_transformers(tmp_path):
    cfg = _cfg(tmp_path, "distill=sampled", "distill.k=32", f"distill.teacher=hf:{tmp_path / 'hf'}")
    torch.manual_seed(0)
    ours = build_model(_model_cfg(cfg)).eval()
    to_hf(ours).save_pretrained(tmp_path / "hf")
    x = torch.randint(0, 264, (2, 16))
    with torch.no_grad():
        assert_close_to_reference(
            load_teacher(f"hf:{tmp_path / 'hf'}")(x), ours(x), terms=transformer_terms(ours.cfg, 16)
        )
    OmegaConf.update(cfg, "trainer.max_steps", 2)
    assert train(cfg, tmp_path / "run")["status"] == "completed"
    OmegaConf.update(cfg, "distill.kind", "topk")
    OmegaConf.update(cfg, "distill.k", 265)
    with pytest.raises(ValueError, match=r"distill\.k: got 265 with distill.kind 'topk'; allowed: at most .* 264"):
        train(cfg, tmp_path / "run1")
    OmegaConf.update(cfg, "model.vocab_size", 300)
    with pytest.raises(ConfigError, match=r"a teacher with vocab_size 264; .*model\.vocab_size=300"):
        train(cfg, tmp_path / "run2")  # the teacher's config is read before the run dir exists
    assert not (tmp_path / "run2").exists()


def test_cached_targets_are_computed_once_and_the_second_student_never_asks_the_teacher(
    teacher_dir, tmp_path, monkeypatch
):
    precomputed, seen = [], []
    real_precompute, real_load = workbench.distill.precompute_targets, training_run.load_teacher

    def counted(*args, **kwargs):
        precomputed.append(1)
        return real_precompute(*args, **kwargs)

    def watched(spec):
        teacher = real_load(spec)
        teacher.register_forward_pre_hook(lambda m, args: seen.extend(row_key(r) for r in args[0].cpu()))
        return teacher

    monkeypatch.setattr(workbench.distill, "precompute_targets", counted)
    monkeypatch.setattr(training_run, "load_teacher", watched)
    common = ["distill=sampled", "distill.k=16", "distill.cache=true", f"distill.teacher={teacher_dir}",
              "trainer.max_steps=3"]  # fmt: skip
    first = train(_cfg(tmp_path, *common), tmp_path / "a")
    cfg = _cfg(tmp_path, *common, "model.n_layers=1")  # another student, same teacher, data, k and seed
    bundle = build_data(cfg.data, cfg.seed)
    train_rows = {row_key(r) for i in range(3) for r in bundle.train(i)[0]}
    assert train_rows <= set(seen) and len(precomputed) == 1  # the first student computed them
    seen.clear()
    second = train(cfg, tmp_path / "b")
    assert len(precomputed) == 1 and seen and not train_rows & set(seen)  # only validation windows reach it
    assert first["status"] == second["status"] == "completed"
    assert len(list((tmp_path / "distill" / "targets").glob("*/meta.json"))) == 1


def test_teacher_model_is_trained_once_and_the_student_is_the_same_either_way(tmp_path):
    overrides = ["distill=sampled", "distill.k=32", "distill.teacher_model={n_layers: 1}", "distill.teacher_steps=3",
                 "trainer.max_steps=3"]  # fmt: skip
    first = train(_cfg(tmp_path, *overrides), tmp_path / "a")
    teachers = [p for p in (tmp_path / "distill" / "teachers").iterdir() if p.is_dir()]
    assert len(teachers) == 1 and first["teacher"] == str(teachers[0].resolve())
    teacher = json.loads((teachers[0] / "results.json").read_text())
    assert teacher["steps"] == 3 and teacher["params"]["total"] < first["params"]["total"]
    stamp = (teachers[0] / "results.json").stat().st_mtime_ns
    second = train(_cfg(tmp_path, *overrides), tmp_path / "b")  # loads that teacher: same random state, same student
    assert (teachers[0] / "results.json").stat().st_mtime_ns == stamp
    assert second["val_loss"] == first["val_loss"] and second["train_loss"] == first["train_loss"]


def test_teacher_lr_gives_every_student_rate_one_teacher_trained_at_that_rate(tmp_path):
    """Without distill.teacher_lr the teacher trains at the student's optim.lr (a grid tuning the student's rate would
    plan one teacher per rate); with it, students at two rates plan the same teacher, trained at teacher_lr."""
    base = ["distill=sampled", "distill.teacher_model={n_layers: 1}", f"distill.cache_dir={tmp_path / 'distill'}"]

    def teacher(*overrides: str):
        (plan,) = planned_jobs([*BASE, *base, *overrides], multirun=False)
        assert [j.what for j in plan] == ["distill.teacher_model", "run"]
        return plan[0]

    own = [teacher("optim.lr=1e-3"), teacher("optim.lr=3e-3")]
    assert own[0].run_dir != own[1].run_dir and [t.cfg.optim.lr for t in own] == [1e-3, 3e-3]
    shared = [teacher("optim.lr=1e-3", "distill.teacher_lr=5e-3"), teacher("optim.lr=3e-3", "distill.teacher_lr=5e-3")]
    assert shared[0].run_dir == shared[1].run_dir and shared[0].cfg.optim.lr == 5e-3
    assert shared[0].run_dir not in {t.run_dir for t in own}
