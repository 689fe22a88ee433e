"""Bad input on the command line, through the real entry in-process: every malformed override, and every setting
this machine cannot run, is one `error:` line naming the field and what is allowed, exit status 2, no traceback,
and nothing created (no run dir, no sweep dir, no cache), before any compute."""

import pytest
import torch

from tests.tiers import tiered
from tests.workbench.train_helpers import assert_user_error, cli_error
from workbench.precision import resolve_precision

NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA device")
PROC = "/proc/workbench-no-such-dir"  # nothing can be created under /proc, not even by root

# (overrides, strings the one error line must hold). {d}: a scratch folder. Every case runs with hydra.run.dir and
# data.cache_dir inside it and logger=none.
CASES = {
    # `+key` / `++key` on a key the schema lacks: an unknown key, as without the `+`
    "+ trainer typo": (["+trainer.max_stepz=3"], ["unknown config key 'trainer.max_stepz'", "did you mean max_steps"]),
    "++ trainer typo": (["++trainer.max_stepz=3"], ["unknown config key 'trainer.max_stepz'", "allowed keys"]),
    "+ model typo": (["+model.windw=3"], ["unknown config key 'model.windw'", "did you mean window"]),
    "++ model new key": (["++model.foo=1"], ["unknown config key 'model.foo'", "allowed keys", "d_model"]),
    "+ key of another source": (["+data.path=x"], ["unknown config key 'data.path'", "allowed keys", "seq_len"]),
    "+ optim typo": (["+optim.lrr=0.1"], ["unknown config key 'optim.lrr'", "did you mean lr"]),
    "+ nested under a field": (["+trainer.foo.bar=1"], ["unknown config key 'trainer.foo'", "allowed keys"]),
    "++ top-level typo": (["++seedz=1"], ["unknown config key 'seedz'", "the top level", "did you mean seed"]),
    "+ logger typo": (["+logger.projectt=x"], ["unknown config key 'logger.projectt'", "did you mean project"]),
    "++ distill typo": (["++distill.kk=3"], ["unknown config key 'distill.kk'", "allowed keys", "teacher"]),
    "+ long_context typo": (["+long_context.bucket=3"], ["'long_context.bucket'", "did you mean buckets"]),
    "+ ablation typo": (["+ablation.armz=x"], ["unknown config key 'ablation.armz'", "did you mean arm"]),
    # the machine: an accelerator, precision or strategy it does not have, devices it cannot start
    "accelerator gpu": (["trainer.accelerator=gpu"], ["trainer.accelerator: got 'gpu'", "allowed here: auto, cpu"]),
    "accelerator cuda": (["trainer.accelerator=cuda"], ["trainer.accelerator: got 'cuda'", "allowed here"]),
    "accelerator tpu": (["trainer.accelerator=tpu"], ["trainer.accelerator: got 'tpu'", "no such device"]),
    "cuda devices": (["trainer.accelerator=cuda", "trainer.devices=4"], ["trainer.accelerator: got 'cuda'"]),
    "fp16 mixed on a CPU": (["trainer.accelerator=cpu", "trainer.precision=16-mixed"],
                            ["trainer.precision: got '16-mixed'", "allowed on a CPU", "bf16-mixed", "32-true"]),
    "fp16 alias on a CPU": (["trainer.accelerator=cpu", "trainer.precision=16"],
                            ["trainer.precision: got '16'", "allowed on a CPU"]),
    "transformer engine on a CPU": (["trainer.accelerator=cpu", "trainer.precision=transformer-engine"],
                                    ["trainer.precision: got 'transformer-engine'", "allowed on a CPU"]),
    "deepspeed": (["trainer.strategy=deepspeed_zero3"], ["trainer.strategy: got 'deepspeed_zero3'", "auto, ddp"]),
    "fsdp2 auto devices": (["trainer=fsdp2", "trainer.devices=auto"], ["trainer.devices: got 'auto'", "integer"]),
    "world not dividing batch": (["trainer=ddp", "trainer.devices=3", "data.batch_size=4"],
                                 ["data.batch_size: got 4", "multiple of the world size 3"]),
    # folders that cannot be created: tried with a probe file, not `os.access` (true for root everywhere)
    "run dir in /proc": ([f"hydra.run.dir={PROC}/run"], ["hydra.run.dir: got", "nothing can be created in /proc",
                                                         "allowed: a folder"]),
    "cache dir in /proc": ([f"data.cache_dir={PROC}/cache"], ["data.cache_dir: got", "nothing can be created"]),
    "cache dir under a file": (["data.cache_dir={d}/afile/cache"], ["data.cache_dir: got", "is a file"]),
    "distill cache in /proc": (["distill=sampled", "distill.teacher_model=tiny", f"distill.cache_dir={PROC}/d"],
                               ["distill.cache_dir: got", "nothing can be created in /proc"]),
    "distill cache under a file": (["distill=sampled", "distill.teacher_model=tiny", "distill.cache_dir={d}/afile/x"],
                                   ["distill.cache_dir: got", "is a file, not a folder"]),
    # words that name the right field, and ranges that are not empty
    "odd head width from d_model": (["model.d_model=100"], ["model.d_model: got 100", "d_model / n_heads = 25",
                                                            "multiple of 2 x n_heads = 8"]),
    "odd head_dim": (["model.head_dim=25"], ["model.head_dim: got 25", "an even head width"]),
    "odd global head_dim": (["model.head_dim_global=33"], ["model.head_dim_global: got 33", "even head width"]),
    "arm names an unknown preset": (["+ablation=gqa", "+ablation.arms.bad={model: smal}", "ablation.arm=bad"],
                                    ["grid gqa, arm bad: model: got 'smal'", "allowed: a preset", "tiny"]),
    "passkey distances, no range": (["long_context.buckets=4", "long_context.passkey_distances=[5]",
                                     "data.seq_len=8"], ["long_context.passkey_distances: got [5]",
                                                         "allowed: none at context 8", "at least 2 x digits + 1 = 11"]),
    "passkey context too short": (["data=passkey", "data.seq_len=8"],
                                  ["data.seq_len: got 8", "at least 2 x data.num_digits + 1 = 11"]),
    "resume a folder": (["resume={d}"], ["resume: got", "an existing .ckpt file"]),
    "init_from empty map": (["init_from={}"], ["init_from: got {}", "non-empty map"]),
    "teacher_model unknown preset": (["distill=sampled", "distill.teacher_model=nope"],
                                     ["distill.teacher_model: got 'nope'", "a preset"]),
    "topk past the vocabulary": (["distill=topk", "distill.teacher_model=tiny", "distill.k=1000"],
                                 ["distill.k: got 1000", "at most the vocabulary, 264"]),
}  # fmt: skip

# under --multirun: each job's checks, and the sweep dir
MULTIRUN = {
    "two local devices per job": (["trainer.devices=2", "seed=0,1"],
                                  ["trainer.devices: got 2", "under --multirun", "allowed: 1 unless the cluster"]),
    "ddp in a grid": (["+ablation=gqa", "ablation.quick=true", "trainer=ddp", "trainer.devices=2"],
                      ["grid gqa, arm", "trainer.devices: got 2", "under --multirun"]),
    "sweep dir in /proc": ([f"hydra.sweep.dir={PROC}/sweep", "seed=0,1"],
                           ["hydra.sweep.dir: got", "nothing can be created in /proc"]),
    "sweep dir under a file": (["hydra.sweep.dir={d}/afile/sweep", "seed=0,1"],
                               ["hydra.sweep.dir: got", "is a file, not a folder"]),
    "+ typo in a sweep": (["+trainer.max_stepz=3", "seed=0,1"], ["unknown config key 'trainer.max_stepz'"]),
    "fp16 on a CPU in a grid": (["+ablation=gqa", "ablation.quick=true", "trainer.accelerator=cpu",
                                 "trainer.precision=16-mixed"], ["grid gqa", "trainer.precision: got '16-mixed'"]),
}  # fmt: skip

GPU_CASES = {"accelerator gpu", "accelerator cuda", "cuda devices"}
# the fast tier's: an added key, a device, a precision, a strategy's sizes, a folder probe, a distillation folder,
# a head width, a checkpoint path, a distillation size; under --multirun the sweep dir
FAST_CASES = ("+ trainer typo", "accelerator tpu", "fp16 mixed on a CPU", "world not dividing batch",
              "run dir in /proc", "distill cache under a file", "odd head width from d_model", "resume a folder",
              "topk past the vocabulary")  # fmt: skip
FAST_MULTIRUN = ("sweep dir in /proc",)


@pytest.fixture
def scratch(tmp_path):
    (tmp_path / "afile").write_text("not a folder")
    return tmp_path


def _fill(items: list[str], d) -> list[str]:
    return [s.replace("{d}", str(d)) for s in items]


@pytest.mark.parametrize("case", tiered(CASES, FAST_CASES, marks=dict.fromkeys(GPU_CASES, (NO_CUDA,))))
def test_command_line(case, scratch, monkeypatch, capsys):
    overrides, expected = (_fill(x, scratch) for x in CASES[case])
    extra = [] if any(o.startswith("hydra.run.dir") for o in overrides) else [f"hydra.run.dir={scratch / 'run'}"]
    if not any(o.startswith(("data.cache_dir", "data=passkey", "data=mqar")) for o in overrides):  # corpus sources
        extra.append(f"data.cache_dir={scratch / 'c'}")
    err = cli_error([*overrides, *extra, "logger=none"], scratch, monkeypatch, capsys)
    assert_user_error(err, expected)


@pytest.mark.parametrize("case", tiered(MULTIRUN, FAST_MULTIRUN))
def test_multirun(case, scratch, monkeypatch, capsys):
    overrides, expected = (_fill(x, scratch) for x in MULTIRUN[case])
    extra = [] if any(o.startswith("hydra.sweep.dir") for o in overrides) else [f"hydra.sweep.dir={scratch / 's'}"]
    argv = ["--multirun", *overrides, *extra, f"data.cache_dir={scratch / 'c'}", "logger=none"]
    assert_user_error(cli_error(argv, scratch, monkeypatch, capsys), expected)


def test_cpu_precisions_that_run_are_accepted():
    """The refusal is only for what Lightning would swap on a CPU: `auto` resolves to one of the allowed values."""
    from workbench.training.sweep import planned_jobs

    assert resolve_precision("auto", "cpu")[0] in ("32-true", "bf16-mixed")
    for precision in ("32-true", "bf16-mixed", "auto"):
        planned_jobs(["trainer.accelerator=cpu", f"trainer.precision={precision}", "logger=none"], False)
