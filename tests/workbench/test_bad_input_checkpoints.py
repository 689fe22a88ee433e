"""Bad input at the checkpoint level, through the real CLI entry in-process: a `resume=`, `init_from=` or
`distill.teacher=` that is empty, truncated, random, not a Lightning checkpoint, of another shape or vocabulary, or
a run dir without one, is one `error:` line naming the field and the file, exit status 2, no traceback, nothing
created: each checkpoint is opened and compared with the config before any run dir exists."""

import pytest
import torch

from tests.tiers import slow_unless, tiered
from tests.workbench.train_helpers import assert_user_error, cli_error, write_checkpoint
from workbench.presets import get_preset

TINY = get_preset("tiny")  # the default model=tiny of conf/train.yaml
FIELDS = {"resume": "resume={}", "init_from": "init_from={}",
          "distill.teacher": "distill=sampled distill.teacher={}"}  # fmt: skip

# file (under the scratch folder) -> strings the error holds besides the field and the file's name
BROKEN = {
    "empty.ckpt": ["is unreadable"],
    "truncated.ckpt": ["is unreadable"],
    "random.ckpt": ["is unreadable"],
    "a_list.ckpt": ["not a Lightning checkpoint: no state_dict"],
    "no_state.ckpt": ["not a Lightning checkpoint: no state_dict"],
    "no_model.ckpt": ["holds no model tensors"],
    "run_without_ckpt": ["allowed"],  # resume: the schema's words (a file); the others: no checkpoints/last.ckpt
}
MISFIT = {  # a sound checkpoint that does not fit the config
    ("resume", "wide.ckpt"): ["does not fit this model config", "shape mismatch"],
    ("resume", "vocab512.ckpt"): ["does not fit this model config", "embed"],
    ("resume", "weights_only.ckpt"): ["holds no loops and optimizer_states", "init_from="],
    ("init_from", "wide.ckpt"): ["does not fit this model config", "shape mismatch", "only context"],
    ("init_from", "deep.ckpt"): ["does not fit this model config", "unexpected"],
    ("init_from", "vocab512.ckpt"): ["does not fit this model config", "shape mismatch"],
    ("distill.teacher", "vocab512.ckpt"): ["a teacher with vocab_size 512", "model.vocab_size=264"],
    ("distill.teacher", "no_config.ckpt"): ["stores no model config"],
    ("distill.teacher", "hf:empty_dir"): ["distill.teacher:", "hf:<dir>"],
    ("distill.teacher", "hf:hf_vocab1000"): ["a teacher with vocab_size 1000", "share the tokenizer"],
    ("distill.teacher", "hf:hf_garbage"): ["distill.teacher:", "hf:<dir>"],
}
# the fast tier's: each field once, each way of being broken once (unreadable, not Lightning's, no model tensors, no
# checkpoint), and a misfit of each field
FAST_BROKEN = {("truncated.ckpt", "resume"), ("no_state.ckpt", "init_from"), ("no_model.ckpt", "distill.teacher"),
               ("run_without_ckpt", "init_from")}  # fmt: skip
assert {(t, f) for t in BROKEN for f in FIELDS} >= FAST_BROKEN, "a fast case that is no case"
FAST_MISFIT = (("resume", "weights_only.ckpt"), ("init_from", "deep.ckpt"), ("distill.teacher", "hf:hf_vocab1000"))


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    d = tmp_path_factory.mktemp("ckpts")
    sound = write_checkpoint(d / "sound.ckpt", TINY)
    data = sound.read_bytes()
    (d / "empty.ckpt").write_bytes(b"")
    (d / "truncated.ckpt").write_bytes(data[: len(data) // 2])
    (d / "random.ckpt").write_bytes(torch.randint(0, 256, (4096,), generator=torch.Generator().manual_seed(0))
                                    .to(torch.uint8).numpy().tobytes())  # fmt: skip
    torch.save([1, 2, 3], d / "a_list.ckpt")
    torch.save({"epoch": 0}, d / "no_state.ckpt")
    torch.save({"state_dict": {"other.weight": torch.zeros(2)}}, d / "no_model.ckpt")
    (d / "run_without_ckpt").mkdir()
    write_checkpoint(d / "wide.ckpt", TINY.replace(d_model=64, mlp_hidden=128))
    write_checkpoint(d / "deep.ckpt", TINY.replace(n_layers=8))
    write_checkpoint(d / "vocab512.ckpt", TINY.replace(vocab_size=512))
    ckpt = torch.load(sound, weights_only=False)
    torch.save({"state_dict": ckpt["state_dict"]}, d / "weights_only.ckpt")
    del ckpt["model_config"]
    torch.save(ckpt, d / "no_config.ckpt")  # and no config.yaml beside a checkpoints/ folder
    (d / "empty_dir").mkdir()
    (d / "hf_garbage").mkdir()
    (d / "hf_garbage" / "config.json").write_text("{not json")
    from transformers import Gemma3TextConfig

    hf = Gemma3TextConfig(vocab_size=1000, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                          num_attention_heads=2, num_key_value_heads=1, head_dim=16)  # fmt: skip
    hf.save_pretrained(d / "hf_vocab1000")
    return d


def _case(field: str, target: str, expected: list[str], scratch, tmp_path, monkeypatch, capsys) -> None:
    hf = target.startswith("hf:")
    value = f"hf:{scratch / target[3:]}" if hf else str(scratch / target)
    overrides = FIELDS[field].format(value).split()
    argv = [*overrides, f"hydra.run.dir={tmp_path / 'run'}", f"data.cache_dir={tmp_path / 'c'}", "logger=none"]
    before = set(scratch.rglob("*"))
    err = cli_error(argv, tmp_path, monkeypatch, capsys)
    assert_user_error(err, [f"{field}:", target[3:] if hf else target, *expected])
    assert set(scratch.rglob("*")) == before


@pytest.mark.parametrize(
    ("field", "target"),
    [pytest.param(f, t, id=f"{t}-{f}", marks=slow_unless((t, f) in FAST_BROKEN)) for t in BROKEN for f in FIELDS],
)
def test_broken_checkpoint(field, target, scratch, tmp_path, monkeypatch, capsys):
    _case(field, target, BROKEN[target], scratch, tmp_path, monkeypatch, capsys)


@pytest.mark.parametrize(("field", "target"), tiered(MISFIT, FAST_MISFIT))
def test_checkpoint_that_does_not_fit(field, target, scratch, tmp_path, monkeypatch, capsys):
    _case(field, target, MISFIT[field, target], scratch, tmp_path, monkeypatch, capsys)


def test_sound_checkpoints_are_accepted(scratch, tmp_path):
    """The fixture every case breaks is itself valid for each field: the errors above are about the breakage."""
    from workbench.training.sweep import planned_jobs

    for field in FIELDS:
        overrides = FIELDS[field].format(scratch / "sound.ckpt").split()
        planned_jobs([*overrides, f"hydra.run.dir={tmp_path / 'run'}", f"data.cache_dir={tmp_path / 'c'}"], False)
