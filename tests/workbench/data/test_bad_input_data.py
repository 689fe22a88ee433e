"""Bad input at the data level, through the real CLI entry in-process: a corpus, a Hugging Face dataset or
tokenizer, a synthetic task's sizes or a cache folder that cannot serve the run is one `error:` line naming the
field and what is allowed, exit status 2, no traceback, nothing created; the dataset and the tokenizer are opened
(not only looked up) before any run dir exists."""

import pytest

from tests.tiers import tiered
from tests.workbench.train_helpers import assert_user_error, cli_error

PROC = "/proc/workbench-no-such-dir"
HF = ["data=hf", "data.name={d}/ds", "data.tokenizer={d}/tok.json"]  # a dataset and tokenizer that load

# (overrides, strings the one error line must hold). {d}: the scratch folder of the `scratch` fixture.
CASES = {
    # text corpora
    "text path absent": (["data=text", "data.path={d}/nope"], ["data.path: got", "does not exist"]),
    "text folder of other files": (["data=text", "data.path={d}/md_only"], ["data.path: got", "no files matching",
                                                                          "*.txt"]),
    "text glob matching nothing": (["data=text", "data.path={d}/small", "data.glob=*.md"], ["no files matching",
                                                                                          "*.md"]),
    "text file empty": (["data=text", "data.path={d}/empty.txt"], ["data.path: got", "an empty corpus"]),
    "text corpus too small": (["data=text", "data.path={d}/small", "data.seq_len=64"],
                              ["data.path: got", "a too small corpus", "130 tokens"]),
    "text path unset": (["data=text"], ["data.path: missing", "a text file or a folder"]),
    "text cache in /proc": (["data=text", "data.path={d}/big.txt", f"data.cache_dir={PROC}/c"],
                            ["data.cache_dir: got", "nothing can be created in /proc"]),
    "stdlib cache under a file": (["data.cache_dir={d}/afile/c"], ["data.cache_dir: got", "is a file"]),
    # corpus split sizes
    "seq_len zero": (["data.seq_len=0"], ["data.seq_len: got 0", "an integer >= 1"]),
    "val_fraction zero": (["data.val_fraction=0"], ["data.val_fraction: got 0", "(0, 1)"]),
    "selection_fraction": (["data.selection_fraction=1.5"], ["data.selection_fraction", "1.5"]),
    "passkey digits past the window": (["data.passkey_mix=0.5", "data.passkey_digits=200"],
                                       ["data.passkey_digits: got 200", "at most (data.seq_len - 1) // 2"]),
    # Hugging Face datasets and tokenizers: opened before any run dir exists
    "hf tokenizer garbage": ([*HF, "data.tokenizer={d}/garbage.json"],
                             ["data.tokenizer:", "allowed: a local tokenizer.json file or tokenizer folder"]),
    "hf tokenizer empty file": ([*HF, "data.tokenizer={d}/empty.txt"], ["data.tokenizer:", "tokenizer.json"]),
    "hf tokenizer empty folder": ([*HF, "data.tokenizer={d}/empty_dir"], ["data.tokenizer:", "tokenizer folder"]),
    "hf tokenizer absent": ([*HF, "data.tokenizer={d}/nope.json"], ["data.tokenizer: got", "does not exist"]),
    "hf tokenizer unset": (["data=hf", "data.name={d}/ds"], ["data.tokenizer: missing"]),
    "hf eos not in the vocabulary": ([*HF, "data.eos_token='<eos>'"],
                                     ["data.eos_token: got '<eos>'", "allowed: null or a token of data.tokenizer"]),
    "hf vocabulary past the model's": ([*HF, "data.tokenizer={d}/big_tok.json"],
                                       ["model.vocab_size: got 264", "allowed: at least 1000", "big_tok.json"]),
    "hf dataset folder not a dataset": ([*HF, "data.name={d}/empty_dir"], ["data.name:", "save_to_disk folder"]),
    "hf dataset a plain file": ([*HF, "data.name={d}/big.txt"], ["data.name:", "that loads"]),
    "hf dataset split absent": ([*HF, "data.name={d}/ds_dict", "data.split=validation"],
                                ["data.split: got 'validation'", "allowed: train"]),
    "hf dataset text field absent": ([*HF, "data.text_field=body"], ["data.text_field: got 'body'", "allowed: text"]),
    "hf dataset unset": (["data=hf", "data.tokenizer={d}/tok.json"], ["data.name: missing"]),
    "hf passkey mix": ([*HF, "data.passkey_mix=0.25"], ["data.passkey_mix: got 0.25", "0 for data.source=hf"]),
    # synthetic tasks
    "passkey context too short": (["data=passkey", "data.seq_len=10"], ["data.seq_len: got 10", "= 11"]),
    "passkey distance past the context": (["data=passkey", "data.distance=300"], ["data.distance: got 300",
                                                                                  "at most"]),
    "mqar pairs past the keys": (["data=mqar", "data.num_pairs=70"], ["data.num_pairs: got 70",
                                                                      "at most data.num_keys=64"]),
    "mqar ids past the vocabulary": (["data=mqar", "data.num_keys=200", "data.num_values=200"],
                                     ["model.vocab_size: got 264", "at least 400"]),
    "mqar batch zero": (["data=mqar", "data.batch_size=0"], ["data.batch_size: got 0", ">= 1"]),
}  # fmt: skip
# the fast tier's: a corpus, a cache folder, a split size, a tokenizer, a dataset, each synthetic task
FAST_CASES = ("text corpus too small", "stdlib cache under a file", "val_fraction zero", "hf tokenizer garbage",
              "hf dataset split absent", "passkey distance past the context", "mqar pairs past the keys")  # fmt: skip


def _tokenizer(path, n: int) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers

    tok = Tokenizer(models.WordLevel({"[UNK]": 0, **{f"w{i}": i for i in range(1, n)}}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.save(str(path))


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    """Read-only inputs, shared by the cases (each checks that nothing is created beside them)."""
    import datasets

    d = tmp_path_factory.mktemp("data")
    (d / "empty_dir").mkdir()
    (d / "md_only").mkdir()
    (d / "md_only" / "a.md").write_text("x" * 1000)
    (d / "empty.txt").write_bytes(b"")
    (d / "big.txt").write_text("x" * 100_000)
    (d / "small").mkdir()
    for name in ("a.txt", "b.txt"):
        (d / "small" / name).write_bytes(b"x" * 63)  # 2 x (63 bytes + EOS) = 128 < 2 x 65 tokens
    (d / "afile").write_text("not a folder")
    (d / "garbage.json").write_text("{not json")
    _tokenizer(d / "tok.json", 200)
    _tokenizer(d / "big_tok.json", 1000)
    rows = {"text": [" ".join(f"w{i % 199 + 1}" for i in range(j, j + 300)) for j in range(40)]}
    datasets.Dataset.from_dict(rows).save_to_disk(str(d / "ds"))
    datasets.DatasetDict({"train": datasets.Dataset.from_dict(rows)}).save_to_disk(str(d / "ds_dict"))
    return d


@pytest.mark.parametrize("case", tiered(CASES, FAST_CASES))
def test_data(case, scratch, tmp_path, monkeypatch, capsys):
    overrides, expected = ([s.replace("{d}", str(scratch)) for s in x] for x in CASES[case])
    extra = [f"hydra.run.dir={tmp_path / 'run'}", "logger=none"]
    if not any(o.startswith(("data.cache_dir", "data=passkey", "data=mqar")) for o in overrides):
        extra.append(f"data.cache_dir={tmp_path / 'cache'}")
    before = set(scratch.rglob("*"))
    assert_user_error(cli_error([*overrides, *extra], tmp_path, monkeypatch, capsys), expected)
    assert set(scratch.rglob("*")) == before


def test_hf_inputs_that_load_are_accepted(scratch, tmp_path):
    """The fixtures the cases break are themselves valid: the errors above are about the one broken field."""
    from workbench.training.sweep import planned_jobs

    args = [s.replace("{d}", str(scratch)) for s in HF]
    planned_jobs([*args, f"hydra.run.dir={tmp_path / 'run'}", f"data.cache_dir={tmp_path / 'c'}"], False)
    planned_jobs([*args, f"data.name={scratch / 'ds_dict'}", f"data.cache_dir={tmp_path / 'c'}"], False)
