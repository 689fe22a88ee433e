import json
import shutil
from types import SimpleNamespace

import pytest
import yaml

from analysis import runs


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
    done = SimpleNamespace(summary_metrics=summary, url="https://wandb.ai/e/p/runs/a1", id="a1",
                           config={"model": {"window": 64}, "_wandb": {"v": 1}}, state="finished")  # fmt: skip
    crashed = SimpleNamespace(summary_metrics={}, config={}, url="u", id="b2", state="crashed")

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


def test_load_metrics_without_a_csv_names_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"metrics.csv: no metrics.csv"):
        runs.load_metrics(tmp_path)


# a real W&B offline run: its run dir's results.json and metrics.csv are the source, not W&B's binary log ---------
@pytest.fixture(scope="module")
def wandb_run(tmp_path_factory):
    """A tiny training run logged offline to W&B as well as to metrics.csv."""
    import wandb

    from tests.workbench.train_helpers import FAST, compose_cfg
    from workbench.training.jobs import train

    tmp = tmp_path_factory.mktemp("wandb_run")
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("WANDB_API_KEY", raising=False)
        mp.setenv("WANDB_MODE", "offline")
        cfg = compose_cfg(["logger=wandb", "trainer.max_steps=6", "trainer.val_check_interval=6", *FAST], tmp)
        results = train(cfg, tmp / "run")
        wandb.finish()
    (offline,) = (tmp / "run" / "wandb").glob("offline-run-*")
    return SimpleNamespace(run_dir=tmp / "run", offline=offline, results=results)


def test_a_wandb_logged_run_is_one_row_and_its_curve_is_metrics_csv(wandb_run):
    df = runs.load(wandb_run.run_dir)
    assert list(df["source"]) == ["run_dir"]  # the nested W&B run adds no row
    row = df.iloc[0]
    for key in ("val_loss", "val_bpb", "train_loss"):
        assert row[key] == wandb_run.results[key], key
    curve = runs.load_metrics(wandb_run.run_dir)
    train = curve.dropna(subset=["train/loss"])
    assert len(train) == 6 and train["step"].is_monotonic_increasing
    assert train["train/loss"].iloc[-1] == pytest.approx(wandb_run.results["train_loss"], rel=1e-6)
    assert curve["val/loss"].dropna().iloc[-1] == pytest.approx(wandb_run.results["val_loss"], rel=1e-6)


def test_run_dir_without_results_is_an_incomplete_row_of_its_own(wandb_run, tmp_path):
    """W&B's binary log is not read: the run dir's metrics.csv makes it an incomplete run."""
    shutil.copytree(wandb_run.run_dir, tmp_path / "run")
    (tmp_path / "run" / "results.json").unlink()
    df = runs.load(tmp_path)
    assert list(df["source"]) == ["run_dir"] and list(df["status"]) == ["incomplete"]
