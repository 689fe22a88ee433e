"""`distill=on_policy` in the training app: its config checks, a tiny run from a planned teacher that logs the
divergence, the same losses on a rerun (seeded sampling), and the dry run pricing what the run counts."""

import pandas as pd
import pytest

from tests.workbench.train_helpers import FAST, compose_cfg
from workbench.accounting import generation_flops
from workbench.config import ModelConfig
from workbench.training.dry_run import job_cost
from workbench.training.errors import ConfigError
from workbench.training.jobs import train
from workbench.training.plan import plan
from workbench.training.sweep import planned_jobs
from workbench.training.validate import validate

BASE = [*FAST, "logger=csv", "trainer.val_check_interval=100", "distill=on_policy"]
TEACHER = ["distill.teacher_model={n_layers: 1}", "distill.teacher_steps=3"]


def _cfg(tmp_path, *overrides):
    return compose_cfg([*BASE, *overrides, f"distill.cache_dir={tmp_path / 'distill'}"], None)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["distill.prompt_len=40", "distill.new_tokens=25"], r"distill.prompt_len, distill.new_tokens: got 40, 25; "
         r"allowed: prompt_len \+ new_tokens at most the training sequence, 64 tokens"),
        (["distill.on_policy_mix=0.1"], r"distill.on_policy_mix: got 0.1 with data.batch_size 4, round\(mix x batch\) "
         r"= 0 sampled rows; allowed: 0, or at least 0.125"),
        (["distill.cache=true"], r"distill.cache: got True with distill.kind 'on_policy'; allowed: with 'sampled' "
         r"\(or 'on_policy' with distill.off_policy 'sampled'\)"),
        (["distill.support=topk", "distill.k=300"], r"distill.k: got 300 with distill.kind 'on_policy'; allowed: at "
         "most the vocabulary, 264"),
        (["distill.beta=2"], r"distill.beta: got 2.*; allowed: a number in \[0, 1\]"),
        (["distill.temperature=0"], r"distill.temperature: got 0.*; allowed: a finite number > 0"),
    ],
)  # fmt: skip
def test_bad_on_policy_keys_fail_before_any_compute(tmp_path, overrides, message):
    cfg = _cfg(tmp_path, *TEACHER, *overrides)
    with pytest.raises(ConfigError, match=message):
        validate(cfg)


def test_unknown_off_policy_kind_fails_at_composition():
    with pytest.raises(ConfigError, match=r"distill.off_policy: got 'kl'.*; allowed: none, sampled, topk, full"):
        planned_jobs([*BASE, *TEACHER, "distill.off_policy=kl"], multirun=False)


@pytest.mark.slow  # a teacher and two students: about 15 s
def test_a_tiny_run_from_a_planned_teacher_logs_the_divergence_and_reruns_identically(tmp_path):
    overrides = [*TEACHER, "distill.off_policy=topk", "distill.k=16", "distill.prompt_len=8",
                 "distill.new_tokens=24", "distill.sample_top_k=50", "trainer.max_steps=4"]  # fmt: skip
    cfg = _cfg(tmp_path, *overrides)
    first = train(cfg, tmp_path / "a")
    assert first["status"] == "completed" and "/distill/teachers/" in first["teacher"]
    metrics = pd.read_csv(tmp_path / "a" / "metrics.csv")
    train_rows = metrics.dropna(subset=["train/loss"])
    jsd, kd = train_rows["train/on_policy_jsd"].to_numpy(), train_rows["train/kd_loss"].to_numpy()
    assert len(jsd) == 4 and (jsd > 0).all() and metrics["val/kd_loss"].notna().any()
    # half of the 4 rows sampled, half distilled off-policy (alpha 0): the loss is their rows' mean
    assert train_rows["train/loss"].to_numpy() == pytest.approx((jsd + kd) / 2, rel=1e-6)
    second = train(_cfg(tmp_path, *overrides), tmp_path / "b")  # the same teacher, seed and draws
    again = pd.read_csv(tmp_path / "b" / "metrics.csv").dropna(subset=["train/loss"])
    assert (again["train/on_policy_jsd"].to_numpy() == jsd).all()
    assert second["train_loss"] == first["train_loss"] and second["val_loss"] == first["val_loss"]
    # the dry run prices what the run counted for MFU: sampling 2 rows, training them on 31 tokens, 2 rows on 64
    cost = job_cost(plan(cfg, tmp_path / "a")[-1])
    assert cost.flops_per_step == first["flops_per_batch"]
    model = ModelConfig.from_dict(dict(cfg.model))
    assert cost.decode_flops_per_token == generation_flops(model, 8, 24) / 24


def test_every_row_on_policy_with_forward_kl_trains_on_the_divergence_alone(tmp_path):
    cfg = _cfg(tmp_path, *TEACHER, "distill.on_policy_mix=1", "distill.beta=0", "distill.prompt_len=4",
               "distill.new_tokens=8", "trainer.max_steps=2", "logger=csv")  # fmt: skip
    assert train(cfg, tmp_path / "run")["status"] == "completed"
    rows = pd.read_csv(tmp_path / "run" / "metrics.csv").dropna(subset=["train/loss"])
    assert "train/next_token_loss" not in rows or rows["train/next_token_loss"].isna().all()
    assert rows["train/loss"].to_numpy() == pytest.approx(rows["train/on_policy_jsd"].to_numpy(), rel=1e-6)
