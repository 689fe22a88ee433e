import json
import shutil
import time
from types import SimpleNamespace

import pandas as pd
import pytest
import yaml

from analysis import runs, wandb_log


def write_run(run_dir, config, results=None, metrics="step,train_loss\n0,5.5\n10,4.0\n"):
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    (run_dir / "metrics.csv").write_text(metrics)
    if results is not None:
        (run_dir / "results.json").write_text(json.dumps(results))


def write_wandb_offline(parent, name, config, summary):
    files = parent / "wandb" / name / "files"
    files.mkdir(parents=True)
    wrapped = {k: {"desc": None, "value": v} for k, v in config.items()}
    wrapped["_wandb"] = {"desc": None, "value": {"cli_version": "0.31.0"}}
    (files / "config.yaml").write_text(yaml.safe_dump(wrapped))
    (files / "wandb-summary.json").write_text(json.dumps({**summary, "_wandb": {"runtime": 3}}))


@pytest.fixture
def sweep(tmp_path):
    for i, (window, lr) in enumerate([(64, 1e-3), (128, 3e-3)]):
        config = {"model": {"window": window, "layer_pattern": "5:1"}, "optim": {"lr": lr}, "seed": i}
        results = {"val_loss": 2.0 + i, "val_bpb": 1.1, "tokens_seen": 1000, "steps": 10, "seed": i,
                   "status": "completed", "params": {"embedding": 23, "non_embedding": 100, "total": 123}}  # fmt: skip
        write_run(tmp_path / "sweep" / f"run{i}", config, results)
        write_wandb_offline(tmp_path / "sweep" / f"run{i}", f"offline-run-2025_{i}-abc{i}", config, {"val_loss": 9})
    write_run(tmp_path / "sweep" / "crashed", {"model": {"window": 32}, "optim": {"lr": 1e-2}})
    (tmp_path / "sweep" / "run0" / "lightning_logs" / "version_0").mkdir(parents=True)
    (tmp_path / "sweep" / "run0" / "lightning_logs" / "version_0" / "metrics.csv").write_text("step\n0\n")
    write_wandb_offline(tmp_path / "solo", "offline-run-20250101_000000-xyz9", {"model": {"window": 16}},
                        {"val_loss": 3.5, "tokens": 77})  # fmt: skip
    return tmp_path


def test_one_row_per_run_with_flattened_config(sweep):
    df = runs.load(sweep / "sweep").set_index("run_dir")
    assert len(df) == 3  # the nested W&B and logger dirs belong to their run and add no rows
    run1 = df.loc[str((sweep / "sweep" / "run1").resolve())]
    assert (run1["model.window"], run1["optim.lr"], run1["val_loss"], run1["status"]) == (128, 3e-3, 3.0, "completed")
    assert run1["model.layer_pattern"] == "5:1" and run1["params.total"] == 123
    crashed = df.loc[str((sweep / "sweep" / "crashed").resolve())]
    assert crashed["status"] == "incomplete" and crashed["model.window"] == 32


def test_glob_and_wandb_offline(sweep):
    df = runs.load(str(sweep / "*"))
    assert sorted(df["source"]) == ["run_dir"] * 3 + ["wandb_offline"]
    solo = df[df["source"] == "wandb_offline"].iloc[0]
    assert (solo["model.window"], solo["val_loss"], solo["tokens"], solo["wandb_id"]) == (16, 3.5, 77, "xyz9")
    assert not any(c.startswith("_wandb") for c in df.columns)


def test_glob_of_results_files(sweep):
    assert len(runs.load(str(sweep / "**" / "results.json"))) == 2


def test_several_patterns_do_not_duplicate(sweep):
    df = runs.load([sweep / "sweep", str(sweep / "sweep" / "run*"), sweep / "solo"])
    assert len(df) == 4 and df["run_dir"].is_unique


def test_results_win_over_config_and_keep_it(tmp_path):
    write_run(tmp_path / "r", {"seed": 1, "model": {"window": 8}}, {"seed": 2, "val_loss": 1.0})
    row = runs.load(tmp_path).iloc[0]
    assert (row["seed"], row["config.seed"]) == (2, 1)


def test_hydra_subdir_config_fallback(tmp_path):
    write_run(tmp_path / "r", {}, {"val_loss": 1.5})
    (tmp_path / "r" / "config.yaml").unlink()
    (tmp_path / "r" / ".hydra").mkdir()
    (tmp_path / "r" / ".hydra" / "config.yaml").write_text(yaml.safe_dump({"optim": {"lr": 0.5}}))
    assert runs.load(tmp_path).iloc[0]["optim.lr"] == 0.5


def test_nothing_found_is_an_empty_frame(tmp_path):
    assert runs.load(tmp_path / "nope*").empty


def test_entity_project_goes_to_the_wandb_api(monkeypatch):
    """The mapping of `wandb.Api().runs` (no server here): metrics get results.json names, states a status."""
    summary = {"val/loss": 2.5, "train/loss": 3.0, "_wandb": {"runtime": 9}}
    done = SimpleNamespace(summary=SimpleNamespace(_json_dict=summary), url="https://wandb.ai/e/p/runs/a1", id="a1",
                           config={"model": {"window": 64}, "_wandb": {"v": 1}}, state="finished")  # fmt: skip
    crashed = SimpleNamespace(summary=SimpleNamespace(_json_dict={}), config={}, url="u", id="b2", state="crashed")

    class FakeApi:
        def runs(self, path):
            assert path == "ent/proj"
            return [done, crashed]

    monkeypatch.setattr("wandb.Api", FakeApi)
    df = runs.load("ent/proj")
    row = df.iloc[0]
    assert (row["model.window"], row["val_loss"], row["val/loss"], row["train_loss"]) == (64, 2.5, 2.5, 3.0)
    assert (row["source"], row["state"], row["status"], row["wandb_id"]) == ("wandb_api", "finished", "completed", "a1")
    assert list(df["status"]) == ["completed", "failed"]
    assert not any(c.startswith("_wandb") for c in df.columns)


def test_load_metrics(sweep):
    curve = runs.load_metrics(sweep / "sweep" / "run0")
    assert list(curve.columns) == ["step", "train_loss"] and curve["train_loss"].iloc[-1] == 4.0


# a real W&B offline run: the binary log is the only place W&B 0.31 keeps its config and summary ------------------
@pytest.fixture(scope="module")
def wandb_run(tmp_path_factory):
    """A tiny training run logged offline to W&B; 30 logged steps make its log span more than one 32 KiB block."""
    import wandb

    from tests.workbench.train_helpers import FAST, compose_cfg
    from workbench.training.jobs import train

    tmp = tmp_path_factory.mktemp("wandb_run")
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("WANDB_API_KEY", raising=False)
        mp.setenv("WANDB_MODE", "offline")
        cfg = compose_cfg(["logger=wandb", "trainer.max_steps=30", "trainer.val_check_interval=30", *FAST], tmp)
        results = train(cfg, tmp / "run")
        wandb.finish()  # what the CLI's exit does: W&B writes the rest of its log and the exit record
    (offline,) = (tmp / "run" / "wandb").glob("offline-run-*")
    _wait_for_exit_record(next(offline.glob("run-*.wandb")))
    return SimpleNamespace(run_dir=tmp / "run", offline=offline, results=results)


def _wait_for_exit_record(log_path, timeout_s: float = 60.0) -> None:
    """W&B's service process may still be flushing the log's last block after `finish()` returns (seen on a loaded
    CI machine: the log stood at exactly one 32 KiB block); the tests read the finished log, so wait for its end."""
    deadline = time.monotonic() + timeout_s
    while wandb_log.read(log_path).exit_code is None:
        assert time.monotonic() < deadline, f"{log_path}: no exit record {timeout_s} s after wandb.finish()"
        time.sleep(0.2)


def test_wandb_log_alone_gives_the_results_and_config(wandb_run, tmp_path):
    (log_path,) = wandb_run.offline.glob("run-*.wandb")
    assert log_path.stat().st_size > wandb_log.BLOCK
    reference = runs.load(wandb_run.run_dir).iloc[0]  # results.json + config.yaml
    shutil.copytree(wandb_run.offline, tmp_path / wandb_run.offline.name)
    df = runs.load(tmp_path)
    assert len(df) == 1
    row = df.iloc[0]
    assert (row["source"], row["status"], row["wandb_id"]) == ("wandb_offline", "completed", log_path.stem[4:])
    for key in ("val_loss", "val_bpb", "val_accuracy", "train_loss"):
        assert row[key] == pytest.approx(wandb_run.results[key], rel=1e-12), key
    config = [c for c in df.columns if c.split(".")[0] in ("model", "optim", "data", "trainer") and c in reference]
    assert {"model.window", "model.n_layers", "optim.lr", "data.seq_len", "trainer.max_steps"} <= set(config)
    # results.json's `data` info shadows config fields of the same name, which stay as `config.<name>`
    assert {c: row[c] for c in config if not _same(row[c], reference.get(f"config.{c}", reference[c]))} == {}


def _same(a, b) -> bool:
    """Equal config values; a missing value reads as None in one frame and NaN in another."""
    return bool(pd.isna(a) and pd.isna(b)) if pd.api.types.is_scalar(a) and pd.isna(a) else a == b


def test_run_dir_without_results_defers_to_its_wandb_log(wandb_run, tmp_path):
    shutil.copytree(wandb_run.run_dir, tmp_path / "run")
    (tmp_path / "run" / "results.json").unlink()
    df = runs.load(tmp_path)
    assert list(df["source"]) == ["wandb_offline"]  # one row: not also an "incomplete" one for the run dir
    assert df.iloc[0]["val_loss"] == wandb_run.results["val_loss"]


def test_wandb_history_is_the_curve(wandb_run):
    curve = runs.load_metrics(wandb_run.offline)
    train = curve.dropna(subset=["train/loss"])
    assert len(train) == 30 and train["step"].is_monotonic_increasing
    assert train["train/loss"].iloc[-1] == wandb_run.results["train_loss"]
    assert curve["val/loss"].dropna().iloc[-1] == wandb_run.results["val_loss"]


def test_torn_wandb_log_reads_up_to_the_tear(wandb_run, tmp_path):
    """A run killed mid-write: the records before the tear, no exit record, so the row is incomplete."""
    (log_path,) = wandb_run.offline.glob("run-*.wandb")
    torn = tmp_path / "offline-run-20250101_000000-torn" / "run-torn.wandb"
    torn.parent.mkdir()
    torn.write_bytes(log_path.read_bytes()[: wandb_log.BLOCK + 100])
    log, full = wandb_log.read(torn, history=True), wandb_log.read(log_path, history=True)
    assert full.exit_code == 0 and log.exit_code is None
    assert 0 < len(log.history) < len(full.history) and log.config == full.config
    assert runs.load(tmp_path).iloc[0]["status"] == "incomplete"


def test_not_a_wandb_log_is_rejected(tmp_path):
    (tmp_path / "run-x.wandb").write_bytes(b"PK\x03\x04 not a log")
    with pytest.raises(ValueError, match="header"):
        wandb_log.read(tmp_path / "run-x.wandb")
