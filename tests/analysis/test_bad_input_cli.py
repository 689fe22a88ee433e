"""Bad input to every analysis CLI and to `workbench.training.migrate`, in-process: a missing, corrupt or wrong
file, or a bad flag, is one `error:` line naming the file or the flag, exit status 2, no traceback, and nothing
written (no summary, no plot, no renamed dir)."""

import importlib
import json

import pytest
import torch
from omegaconf import OmegaConf

from tests.workbench.train_helpers import assert_user_error, compose_cfg, tree, write_checkpoint
from workbench.presets import get_preset

# (module, argv, strings the one error line must hold). {d}: the scratch folder (also the working directory).
CASES = {
    "params unknown preset": ("analysis.params", ["nope"], ["preset: got 'nope'", "tiny"]),
    "params no preset": ("analysis.params", [], ["at least one preset name or --all"]),
    "params unknown flag": ("analysis.params", ["tiny", "--nope"], ["unrecognized arguments: --nope"]),
    "flops context zero": ("analysis.flops", ["tiny", "--context", "0"], ["--context must be >= 1"]),
    "flops context not a number": ("analysis.flops", ["tiny", "--context", "abc"], ["--context", "'abc'"]),
    "kv_cache batch zero": ("analysis.kv_cache", ["tiny", "--batch", "0"], ["--context and --batch must be >= 1"]),
    "kv_cache dtype": ("analysis.kv_cache", ["tiny", "--dtype", "fp7"], ["--dtype", "'fp7'", "bfloat16"]),
    "memory context negative": ("analysis.memory", ["tiny", "--context", "-1"], ["--context must be >= 1"]),
    "memory kv dtype": ("analysis.memory", ["tiny", "--kv-dtype", "x"], ["--kv-dtype", "invalid choice"]),
    "long_context run absent": ("analysis.long_context", ["{d}/nope", "--context", "64"], ["nope", "does not exist"]),
    "long_context run without ckpt": ("analysis.long_context", ["{d}/empty_run", "--context", "64"],
                                      ["empty_run", "does not exist"]),
    "long_context corrupt ckpt": ("analysis.long_context", ["{d}/corrupt_run", "--context", "64"],
                                  ["corrupt_run", "is unreadable"]),
    "long_context no config.yaml": ("analysis.long_context", ["{d}/no_config_run", "--context", "64"],
                                    ["run: got", "no_config_run", "config.yaml"]),
    "long_context config.yaml corrupt": ("analysis.long_context", ["{d}/bad_config_run", "--context", "64"],
                                         ["run:", "bad_config_run", "config.yaml"]),
    "long_context context zero": ("analysis.long_context", ["{d}/run", "--context", "0"], ["--context: got 0"]),
    "long_context context unset": ("analysis.long_context", ["{d}/run"], ["--context", "required"]),
    "long_context buckets zero": ("analysis.long_context", ["{d}/run", "--context", "64", "--buckets", "0"],
                                  ["--buckets: got 0", "from 1 to the context, 64"]),
    "long_context buckets past": ("analysis.long_context", ["{d}/run", "--context", "8", "--buckets", "9"],
                                  ["--buckets: got 9"]),
    "long_context distances past": ("analysis.long_context", ["{d}/run", "--context", "64", "--distances", "100"],
                                    ["--distances: got [100]", "allowed: 0..53"]),
    "long_context distances, no range": ("analysis.long_context", ["{d}/run", "--context", "8", "--buckets", "2",
                                                                   "--distances", "1"],
                                         ["--distances: got [1]", "allowed: none at context 8"]),
    "long_context samples zero": ("analysis.long_context", ["{d}/run", "--context", "64", "--distances", "4",
                                                            "--samples", "0"], ["--samples: got 0", ">= 1"]),
    "long_context device": ("analysis.long_context", ["{d}/run", "--context", "64", "--device", "warp"],
                            ["--device: got 'warp'", "cpu"]),
    "report W&B-shaped missing path": ("analysis.report", ["owner/name"], ["multirun_dir: got 'owner/name'",
                                                                           "not a folder"]),
    "report a file": ("analysis.report", ["{d}/afile"], ["multirun_dir: got", "afile", "not a folder"]),
    "report no runs": ("analysis.report", ["{d}/empty_dir"], ["no ablation runs", "empty_dir"]),
    "report corrupt results.json": ("analysis.report", ["{d}/corrupt_grid"],
                                    ["corrupt_grid/a/results.json: not valid JSON"]),
    "report results.json a list": ("analysis.report", ["{d}/list_grid"],
                                   ["list_grid/a/results.json: got a list", "a JSON object"]),
    "report config.yaml corrupt": ("analysis.report", ["{d}/bad_yaml_grid"],
                                   ["bad_yaml_grid/a/config.yaml: not valid YAML"]),
    "report out a file": ("analysis.report", ["{d}/empty_dir", "--out", "{d}/afile"], ["--out: got", "a file"]),
    "scaling bootstrap negative": ("analysis.scaling", ["{d}/run", "--bootstrap", "-1"],
                                   ["--bootstrap: got -1", ">= 0"]),
    "scaling span below 1": ("analysis.scaling", ["{d}/run", "--span", "0.5"], ["--span: got 0.5", "> 1"]),
    "scaling no runs": ("analysis.scaling", ["{d}/empty_dir"], ["runs: got", "empty_dir", "no run"]),
    "scaling corrupt results.json": ("analysis.scaling", ["{d}/corrupt_grid"], ["results.json: not valid JSON"]),
    "scaling bootstrap not a number": ("analysis.scaling", ["{d}/run", "--bootstrap", "many"], ["--bootstrap"]),
    "migrate missing dir": ("workbench.training.migrate", ["{d}/nope"], ["sweeps: got", "nope", "not a folder"]),
    "migrate a file": ("workbench.training.migrate", ["{d}/afile"], ["sweeps: got", "afile", "not a folder"]),
    "migrate empty dir": ("workbench.training.migrate", ["{d}/empty_dir"], ["holds no <run>/config.yaml"]),
    "migrate config.yaml corrupt": ("workbench.training.migrate", ["{d}/bad_yaml_grid"],
                                    ["bad_yaml_grid/a/config.yaml: not a readable config"]),
    "migrate config.yaml a list": ("workbench.training.migrate", ["{d}/list_yaml_grid"],
                                   ["list_yaml_grid/a/config.yaml: got a list"]),
    "migrate one bad of two": ("workbench.training.migrate", ["{d}/run_grid", "{d}/nope"], ["sweeps: got", "nope"]),
}  # fmt: skip


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    d = tmp_path_factory.mktemp("analysis")
    cfg = compose_cfg(["data.seq_len=64", "logger=none"], d / "cache")
    (d / "afile").write_text("not a folder")
    (d / "empty_dir").mkdir()
    (d / "empty_run").mkdir()
    run = d / "run"
    write_checkpoint(run / "checkpoints" / "last.ckpt", get_preset("tiny"))
    OmegaConf.save(cfg, run / "config.yaml", resolve=True)
    (run / "results.json").write_text(json.dumps({"status": "completed", "val_loss": 2.0, "tokens_seen": 100}))
    (d / "corrupt_run" / "checkpoints").mkdir(parents=True)
    (d / "corrupt_run" / "checkpoints" / "last.ckpt").write_bytes(b"\x00garbage" * 64)
    (d / "corrupt_run" / "config.yaml").write_text((run / "config.yaml").read_text())
    (d / "no_config_run" / "checkpoints").mkdir(parents=True)
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
    torch.save(ckpt, d / "no_config_run" / "checkpoints" / "last.ckpt")
    (d / "bad_config_run").mkdir()
    (d / "bad_config_run" / "checkpoints").symlink_to(run / "checkpoints")
    (d / "bad_config_run" / "config.yaml").write_text("data: [unclosed\n")
    for grid, name, text in [("corrupt_grid", "results.json", '{"status": "compl'),
                             ("list_grid", "results.json", "[1, 2]"),
                             ("bad_yaml_grid", "config.yaml", "model: {unclosed\n"),
                             ("list_yaml_grid", "config.yaml", "- 1\n- 2\n")]:  # fmt: skip
        (d / grid / "a").mkdir(parents=True)
        (d / grid / "a" / name).write_text(text)
    (d / "bad_yaml_grid" / "a" / "results.json").write_text('{"status": "completed"}')  # a run dir beside it
    (d / "run_grid").mkdir()
    (d / "run_grid" / "a").symlink_to(run)
    return d


@pytest.mark.parametrize("case", list(CASES))
def test_analysis_cli(case, scratch, monkeypatch, capsys):
    module, argv, expected = CASES[case]
    monkeypatch.chdir(scratch)  # a relative path (owner/name) is looked up here, never on the W&B API
    monkeypatch.setattr("wandb.Api", lambda *a, **k: pytest.fail("asked the W&B API"))
    argv, expected = ([s.replace("{d}", str(scratch)) for s in x] for x in (argv, expected))
    before = tree(scratch)
    main = importlib.import_module(module).main
    with pytest.raises(SystemExit) as e:
        main(argv)
    out = capsys.readouterr()
    assert e.value.code == 2, out.err
    assert_user_error(out.err, expected)
    assert tree(scratch) == before  # no summary, plot, cache or renamed run dir
