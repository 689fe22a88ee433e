"""Bad input through the real CLI entry: each malformed config or override is rejected before any compute, with one
`error: ...` paragraph naming the field, the value and what is allowed, exit status 2, and no traceback."""

import ast
import sys

import lightning as L
import numpy as np
import pytest
import torch

import workbench.train
import workbench.training.jobs
from tests.tiers import tiered
from tests.workbench.train_helpers import FAST, compose_cfg, run_cli
from workbench.data import build_data, cache
from workbench.training.errors import ConfigError
from workbench.training.schema import PRECISIONS
from workbench.training.sweep import planned_jobs
from workbench.training.validate import validate

# (overrides, strings the message must contain: the field, the value, what is allowed). {d}: a scratch folder.
CASES = {
    "unknown preset": (["model=nope"], ["model: got 'nope'", "allowed", "tiny", "gemma3-1b"]),
    "unknown ablation": (["+ablation=nope"], ["ablation: got 'nope'", "allowed", "window_size"]),
    "unknown arm": (["+ablation=gqa", "ablation.arm=nope"], ["ablation.arm: got 'nope'", "allowed", "kv1"]),
    "unknown data group": (["data=nope"], ["data: got 'nope'", "allowed", "stdlib"]),
    "unknown logger group": (["logger=nope"], ["logger: got 'nope'", "allowed", "csv"]),
    "unknown trainer key": (["trainer.max_stepz=3"], ["max_stepz", "allowed keys", "max_steps"]),
    "unknown top-level key": (["sed=3"], ["'sed'", "allowed keys", "seed"]),
    "unknown model key": (["model.windw=3"], ["windw", "allowed keys", "window"]),
    "self-interpolation": (["model.window=${model.window}"],
                           ["model.window: its interpolation does not resolve (Recursive", "an integer"]),
    "interpolation of no key": (["model.window=${model.nope}"], ["model.window", "'model.nope' not found"]),
    "unknown report metric": (["ablation.metric=val_ppl"],
                              ["ablation.metric: got 'val_ppl'", "val_loss, val_bpb, val_accuracy"]),
    "override syntax": (["trainer.max_steps=[1,"], ["trainer.max_steps=[1,"]),
    "sweep without --multirun": (["seed=1,2"], ["seed", "1,2"]),
    "max_steps not a number": (["trainer.max_steps=abc"], ["trainer.max_steps: got 'abc' (str)", "integer >= 1"]),
    "max_steps zero": (["trainer.max_steps=0"], ["trainer.max_steps: got 0", "integer >= 1"]),
    "max_steps negative": (["trainer.max_steps=-5"], ["trainer.max_steps: got -5", "integer >= 1"]),
    "accumulate float": (["trainer.accumulate_grad_batches=1.5"], ["accumulate_grad_batches: got 1.5", ">= 1"]),
    "val interval zero": (["trainer.val_check_interval=0"], ["trainer.val_check_interval: got 0", ">= 1"]),
    "clip negative": (["trainer.gradient_clip_val=-1"], ["trainer.gradient_clip_val: got -1", "null or"]),
    "precision": (["trainer.precision=fp8"], ["trainer.precision: got 'fp8'", "bf16-mixed", "32-true"]),
    "accelerator": (["trainer.accelerator=quantum"], ["trainer.accelerator: got 'quantum'", "cpu", "cuda"]),
    "compile not bool": (["trainer.compile=maybe"], ["trainer.compile: got 'maybe'", "true or false"]),
    "strategy": (["trainer.strategy=nope"], ["trainer.strategy: got 'nope'", "ddp"]),
    "lr zero": (["optim.lr=0"], ["optim.lr: got 0", "> 0"]),
    "lr not a number": (["optim.lr=fast"], ["optim.lr: got 'fast'", "> 0"]),
    "schedule": (["optim.schedule=linear"], ["optim.schedule: got 'linear'", "cosine", "wsd", "constant"]),
    "betas": (["optim.betas=[0.9]"], ["optim.betas: got [0.9]", "two numbers in [0, 1)"]),
    "min_lr_ratio": (["optim.min_lr_ratio=2"], ["optim.min_lr_ratio: got 2", "[0, 1]"]),
    "warmup past total": (["optim.warmup_steps=100", "optim.total_steps=10"],
                          ["optim.warmup_steps: got 100", "at most optim.total_steps=10"]),
    "n_kv_heads": (["model.n_kv_heads=3"], ["model.n_kv_heads: got 3", "allowed: [1, 2, 4]"]),
    "window type": (["model.window=abc"], ["model.window: got 'abc'", "int"]),
    "window past the context": (["model.window=512"], ["model.window: got 512", "at most model.max_seq_len=256"]),
    "layer pattern": (["model.layer_pattern=7:x"], ["layer_pattern", "7:x"]),
    "attention kind": (["model.attention=nope"], ["model.attention: got 'nope'", "mha", "mla"]),
    "vocab too small": (["model.vocab_size=100"], ["model.vocab_size: got 100", "at least 264"]),
    "post_norm_init name": (["model.post_norm_init=scale"],
                            ["model.post_norm_init: got 'scale'", "null (unit gains", "'scaled'", "a number > 0"]),
    "post_norm_init zero": (["model.post_norm_init=0"], ["model.post_norm_init: got 0", "'scaled'", "a number > 0"]),
    "seq_len past the context": (["data.seq_len=1024"], ["data.seq_len: got 1024", "at most model.max_seq_len=256"]),
    "batch_size zero": (["data.batch_size=0"], ["data.batch_size: got 0", ">= 1"]),
    "val_fraction": (["data.val_fraction=1.5"], ["data.val_fraction: got 1.5", "(0, 1)"]),
    "data source": (["data.source=nope"], ["data.source: got 'nope'", "stdlib", "mqar"]),
    "text path missing": (["data=text"], ["data.path: missing", "allowed", "a text file"]),
    "text path absent": (["data=text", "data.path={d}/nope"], ["data.path: got", "/nope", "does not exist", "allowed"]),
    "text folder empty": (["data=text", "data.path={d}/empty_dir"], ["data.path: got", "no files matching", "*.txt"]),
    "text file empty": (["data=text", "data.path={d}/empty.txt"], ["data.path: got", "an empty corpus", "0 bytes",
                                                                   "at least 2 x (data.seq_len + 1)"]),
    "text corpus too small": (["data=text", "data.path={d}/small", "data.seq_len=64"],
                              ["data.path: got", "a too small corpus", "2 file(s)", "130 tokens"]),
    "hf tokenizer absent": (["data=hf", "data.name=x", "data.tokenizer={d}/tok.json"],
                            ["data.tokenizer: got", "tok.json", "does not exist", "tokenizer.json"]),
    "mqar pairs past keys": (["data=mqar", "data.num_pairs=100"], ["data.num_pairs: got 100", "at most data.num_keys"]),
    "mqar past the context": (["data=mqar", "data.num_pairs=100", "data.num_queries=100"],
                              ["data.num_pairs, data.num_queries: got 100, 100", "at most model.max_seq_len=256"]),
    "passkey distance": (["data=passkey", "data.distance=1000"], ["data.distance: got 1000", "at most"]),
    "passkey mix of 1": (["data.passkey_mix=1.0"], ["data.passkey_mix: got 1.0", "a number in [0, 1)"]),
    "passkey digits zero": (["data.passkey_mix=0.25", "data.passkey_digits=0"],
                            ["data.passkey_digits: got 0", "integer >= 1"]),
    "logger kind": (["logger.kind=nope"], ["logger.kind: got 'nope'", "wandb", "csv", "none"]),
    "resume path": (["resume={d}/nope.ckpt"], ["resume: got", "nope.ckpt", "an existing .ckpt file"]),
    "seed negative": (["seed=-1"], ["seed: got -1", "integer >= 0"]),
    "kv context": (["kv_reference_context=0"], ["kv_reference_context: got 0", ">= 1"]),
    "threads": (["threads=0"], ["threads: got 0", "null or an integer >= 1"]),
    "long_context buckets": (["long_context.buckets=-3"], ["long_context.buckets: got -3", "integer >= 0"]),
    "long_context past the context": (["long_context.buckets=1000"], ["long_context.buckets: got 1000", "256"]),
    "long_context distances": (["long_context.buckets=4", "long_context.passkey_distances=[500]"],
                               ["long_context.passkey_distances: got [500]", "0..245"]),
    "arm key typo": (["+ablation=gqa", "+ablation.arms.bad={optim.lrr: 0.5}", "ablation.arm=bad"],
                     ["grid gqa, arm bad: unknown config key 'optim.lrr'", "did you mean lr"]),
    "quick override typo": (["+ablation=gqa", "ablation.quick=true", "+ablation.quick_overrides.trainer.max_stepz=2",
                             "ablation.arm=kv1"], ["gqa.yaml: ablation.quick_overrides: unknown", "max_stepz"]),
    "factor level typo": (["+ablation=context_extension", "+ablation.factors.method.none.trainer.max_stepz=3",
                           "ablation.arm=small_none"], ["grid context_extension, arm small_none",
                                                        "'trainer.max_stepz'"]),
    "distill teacher xor": (["distill=sampled"], ["distill.teacher: got None", "exactly one of them"]),
    "init_from path": (["init_from={d}/nope"], ["init_from: got", "does not exist"]),
    "run dir under a file": (["hydra.run.dir={d}/afile/run"], ["hydra.run.dir: got", "is a file", "writable"]),
    "cache dir under a file": (["data.cache_dir={d}/afile/cache"], ["data.cache_dir: got", "is a file", "writable"]),
}  # fmt: skip
# the fast tier's cases: a group option, an interpolation, the override parser, a sweep, the model's and the data's
# checks, a grid arm, a folder probe (test_bad_input_cli.py's fast cases hold a schema key and the trainer's checks)
FAST_CASES = ("unknown preset", "self-interpolation", "override syntax", "sweep without --multirun",
              "window past the context", "text corpus too small", "arm key typo", "run dir under a file")  # fmt: skip


@pytest.fixture
def scratch(tmp_path):
    (tmp_path / "empty_dir").mkdir()
    (tmp_path / "empty.txt").write_bytes(b"")
    (tmp_path / "small").mkdir()
    for name in ("a.txt", "b.txt"):
        (tmp_path / "small" / name).write_bytes(b"x" * 63)  # 2 x (63 bytes + EOS) = 128 < 2 x 65 tokens
    (tmp_path / "afile").write_text("not a folder")
    return tmp_path


def _fill(overrides: list[str], d) -> list[str]:
    return [o.replace("{d}", str(d)) for o in overrides]


def _assert_user_error(text: str, expected: list[str]) -> None:
    assert "Traceback" not in text, text
    lines = [line for line in text.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), text  # one paragraph
    for s in expected:
        assert s in lines[0], (s, lines[0])


@pytest.mark.parametrize("case", tiered(CASES, FAST_CASES))
def test_cli_rejects_bad_input_before_anything_runs(case, scratch, monkeypatch, capsys):
    overrides, expected = CASES[case]
    overrides = _fill(overrides, scratch)
    run_dir = scratch / "run"
    extra = [] if any(o.startswith("hydra.run.dir") for o in overrides) else [f"hydra.run.dir={run_dir}"]
    if not any(o.startswith(("data.cache_dir", "data=mqar", "data=passkey")) for o in overrides):  # text sources
        extra.append(f"data.cache_dir={scratch / 'cache'}")
    monkeypatch.setattr(sys, "argv", ["workbench.train", *overrides, *extra, "logger=none"])
    with pytest.raises(SystemExit) as e:
        workbench.train.main()
    assert e.value.code == 2
    out = capsys.readouterr()
    assert out.out == ""
    _assert_user_error(out.err, _fill(expected, scratch))
    assert not run_dir.exists() and not (scratch / "cache").exists()  # nothing created, nothing trained
    assert not list(scratch.rglob("*.ckpt")) and not list(scratch.rglob("results.json"))


@pytest.mark.slow  # a fresh interpreter imports torch and Lightning; the cases above check the same in-process
@pytest.mark.parametrize("case", ["unknown preset", "text path missing"])
def test_cli_subprocess_exits_2_without_traceback(case, tmp_path):
    overrides, expected = CASES[case]
    out = run_cli([*overrides, f"hydra.run.dir={tmp_path / 'run'}", "logger=none"])
    assert out.returncode == 2
    _assert_user_error(out.stderr, expected)
    assert not (tmp_path / "run").exists()


def test_multirun_with_a_mistake_in_every_job_is_rejected_before_any_job(tmp_path, monkeypatch, capsys):
    sweep = tmp_path / "sweep"
    argv = ["--multirun", "+ablation=gqa", "ablation.quick=true", "optim.lr=fast", f"hydra.sweep.dir={sweep}"]
    monkeypatch.setattr(sys, "argv", ["workbench.train", *argv])
    with pytest.raises(SystemExit) as e:
        workbench.train.main()
    assert e.value.code == 2
    _assert_user_error(capsys.readouterr().err, ["optim.lr: got 'fast'", "a finite number > 0"])
    assert not sweep.exists()


def test_one_invalid_arm_stops_the_whole_multirun_before_any_job(tmp_path):
    """Every job is planned and validated before Hydra starts one: a grid never half-runs on a bad arm."""
    sweep = tmp_path / "sweep"
    arms = ["+ablation=gqa", "ablation.quick=true", "ablation.arm=kv1,bad", "+ablation.arms.bad={model.n_kv_heads:3}",
            f"hydra.sweep.dir={sweep}"]  # fmt: skip
    with pytest.raises(ConfigError, match=r"^grid gqa, arm bad: model\.n_kv_heads: got 3"):
        planned_jobs(arms)
    assert len(planned_jobs([*arms[:2], "ablation.arm=kv1,kv2"])) == 2 * 2  # arms x quick seeds
    assert not sweep.exists()


def test_a_bug_still_shows_its_traceback(tmp_path, monkeypatch, capsys):
    """Only user errors lose the traceback: an exception from inside the run is printed whole."""

    def broken(cfg, run_dir, inputs):
        raise RuntimeError("an internal bug")

    monkeypatch.setattr(workbench.training.jobs, "run", broken)
    monkeypatch.setattr(sys, "argv", ["workbench.train", f"hydra.run.dir={tmp_path / 'run'}", "logger=none"])
    with pytest.raises(SystemExit) as e:
        workbench.train.main()
    assert e.value.code == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "RuntimeError: an internal bug" in err and "broken" in err


def test_precisions_are_lightnings():
    """The schema's list is the one Lightning's Trainer itself names when it refuses a precision."""
    with pytest.raises(ValueError, match="Allowed precision values") as e:
        L.Trainer(precision="fp8", accelerator="cpu", logger=False, enable_checkpointing=False)
    allowed = ast.literal_eval(str(e.value).split("Allowed precision values:", 1)[1].strip())
    assert set(PRECISIONS) - {"auto"} == {str(p) for p in allowed}  # 32 arrives as "32"


def test_window_larger_than_the_sequence_is_allowed(tmp_path):
    """A window past data.seq_len (but within model.max_seq_len) only makes local layers see the whole sequence."""
    validate(compose_cfg(["model.window=128", "data.seq_len=64"], tmp_path))


@pytest.mark.parametrize(("value", "gain"), [("null", 1.0), ("scaled", 1 / 12**0.5), ("0.25", 0.25)])
def test_post_norm_init_takes_null_scaled_or_a_number(value, gain, tmp_path):
    """`tiny` has 6 layers: `scaled` is 1/sqrt(12); null is the reference's unit gain."""
    model = validate(compose_cfg([f"model.post_norm_init={value}"], tmp_path))
    assert model.post_norm_gain == pytest.approx(gain, rel=1e-15)


def test_corrupt_token_cache_is_rebuilt_not_rejected(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):
        (corpus / f"{i}.txt").write_bytes(rng.integers(97, 123, 3000, dtype=np.uint8).tobytes())
    cfg = compose_cfg(["data=text", f"data.path={corpus}", "data.val_fraction=0.3", *FAST], tmp_path / "cache")
    validate(cfg)
    before = build_data(cfg.data, 0).train(3)
    train_bin = next((tmp_path / "cache").rglob("train.bin"))
    good = train_bin.read_bytes()
    train_bin.write_bytes(bytes(len(good)))  # same length, wrong content: only the checksum can tell
    assert not cache.is_valid(train_bin)
    validate(cfg)  # a corrupt cache is not a user error
    again = build_data(cfg.data, 0)
    assert cache.is_valid(train_bin) and train_bin.read_bytes() == good
    assert all(torch.equal(a, b) for a, b in zip(before, again.train(3), strict=True))
