"""The config schema: presets are the `model` group's options, overrides reach the model, bad keys fail clearly,
and a non-editable install finds its own configs from any directory."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf, open_dict

from tests.tiers import slow_unless, tiered
from tests.workbench.train_helpers import REPO, compose_cfg, run_cli
from workbench.config import ModelConfig
from workbench.presets import PRESETS
from workbench.training.errors import ConfigError
from workbench.training.grid import resolve_arm, run_id
from workbench.training.migrate import migrate
from workbench.training.sweep import planned_jobs


# the fast tier's: one preset of each family (its YAML option is composed like every other's)
@pytest.mark.parametrize("name", tiered(PRESETS, ("tiny", "gemma2-2b", "gemma3-1b", "gemma4-e2b", "olmo3-tiny")))
def test_every_preset_is_a_model_option_equal_to_the_preset(name, tmp_path):
    cfg = compose_cfg([f"model={name}"], tmp_path)
    assert ModelConfig.from_dict(cfg.model) == PRESETS[name]


def test_model_field_override(tmp_path):
    cfg = compose_cfg(["model=small", "model.window=32", "model.layer_pattern=global", "seed=3"], tmp_path)
    model = ModelConfig.from_dict(cfg.model)
    assert model == PRESETS["small"].replace(window=32, layer_pattern="global")
    assert cfg.seed == 3 and cfg.data.seq_len == 512


# the fast tier's: a group's key, a top-level key, a key of another data source
@pytest.mark.parametrize(
    ("override", "names"),
    [pytest.param(*case, marks=slow_unless(case[0] in ("model.windw=3", "sed=3", "data.path=x"))) for case in [
     ("trainer.max_stepz=3", ["'trainer.max_stepz'", "did you mean max_steps"]),
     ("model.windw=3", ["'model.windw'", "did you mean window"]), ("sed=3", ["'sed'", "did you mean seed"]),
     ("optim.lrr=0.1", ["'optim.lrr'", "did you mean lr"]), ("data.path=x", ["'data.path'", "allowed keys"]),
     ("logger.knd=none", ["'logger.knd'", "kind"]), ("distill.alhpa=1", ["'distill.alhpa'", "alpha"]),
     ("long_context.bucket=2", ["'long_context.bucket'", "buckets"]), ("ablation.seedz=[1]", ["seedz", "seeds"])]],
)  # fmt: skip
def test_an_unknown_key_in_any_group_names_the_key_and_the_closest_ones(override, names):
    with pytest.raises(ConfigError) as e:
        planned_jobs(["model=tiny", override], multirun=False)
    assert all(n in str(e.value) for n in names), str(e.value)


BAD_ARMS = [
    ("{optim.lrr: 0.5}", ["grid gqa, arm bad", "'optim.lrr'", "did you mean lr"]),
    ("{trainer.max_stepz: 3}", ["grid gqa, arm bad", "'trainer.max_stepz'", "did you mean max_steps"]),
    ("{model.n_kv_head: 1}", ["grid gqa, arm bad", "'model.n_kv_head'", "did you mean n_kv_heads"]),
    ("{data.seq_lenn: 8}", ["grid gqa, arm bad", "'data.seq_lenn'", "did you mean seq_len"]),
    ("{trainer.max_steps: abc}", ["grid gqa, arm bad", "trainer.max_steps: got 'abc'"]),
    ('{model.window: "${model.window}"}', ["grid gqa, arm bad: model.window: its interpolation does not resolve"]),
]  # fmt: skip
# the fast tier's: each mode once, each with another kind of mistake (a key typo, a bad value, an interpolation)
FAST_ARMS = {("run", 0), ("multirun", 4), ("dry run", 5)}


@pytest.mark.parametrize(
    ("arm", "names", "mode"),
    [pytest.param(arm, names, mode, id=f"{mode}-{arm}-names{i}", marks=slow_unless((mode, i) in FAST_ARMS))
     for mode in ("run", "multirun", "dry run") for i, (arm, names) in enumerate(BAD_ARMS)],
)  # fmt: skip
def test_a_bad_key_in_an_arm_is_an_error_before_any_job(arm, names, mode, tmp_path):
    overrides = ["+ablation=gqa", "ablation.quick=true", f"+ablation.arms.bad={arm}", f"hydra.sweep.dir={tmp_path}"]
    if mode == "dry run":
        overrides.append("dry_run=true")
    overrides.append("ablation.arm=bad" if mode == "run" else "ablation.arm=kv1,bad")
    with pytest.raises(ConfigError) as e:
        planned_jobs(overrides, multirun=mode != "run")
    assert all(n in str(e.value) for n in names), str(e.value)
    assert not list(tmp_path.iterdir())


def test_a_bad_key_in_a_factor_level_names_the_grid_and_the_arm():
    with pytest.raises(ConfigError, match=r"grid scaling_ladder, arm d8l2_c1: unknown config key 'model.d_modl'"):
        level = "+ablation.factors.size.d8l2={model.d_modl: 8}"
        planned_jobs(["+ablation=scaling_ladder", level, "ablation.arm=d8l2_c1"], multirun=False)


def test_a_key_added_with_its_default_leaves_run_ids_alone(tmp_path):
    """Ids hash the difference from the schema defaults: a config saved before a key existed has the same id."""
    cfg = compose_cfg(["+ablation=gqa", "ablation.arm=kv1"], tmp_path)
    resolved = OmegaConf.to_container(resolve_arm(cfg), resolve=True, enum_to_str=True)  # as a run saves it
    del resolved["data"]["passkey_mix"], resolved["long_context"]["passkey_samples"]  # as if they came later
    assert run_id(resolved, "kv1", 0) == run_id(cfg)
    with open_dict(cfg):
        cfg.data.passkey_mix = 0.25
    assert run_id(cfg) != run_id(resolved, "kv1", 0)


def test_a_relaunch_finds_a_sweep_dir_made_before_diff_ids_after_migration(tmp_path):
    """tests/assets/legacy_sweep holds a run saved by the code of 406c7f0 (`+ablation=gqa ablation.quick=true
    ablation.arm=kv1 seed=0`); `workbench.training.migrate` renames it to today's id, where a relaunch looks."""
    sweep = tmp_path / "sweep"
    shutil.copytree(REPO / "tests" / "assets" / "legacy_sweep", sweep)
    overrides = ["+ablation=gqa", "ablation.quick=true", "ablation.arm=kv1", "seed=0", "trainer.precision=32-true",
                 f"hydra.sweep.dir={sweep}"]  # fmt: skip
    (job,) = planned_jobs(overrides, multirun=True)[0]
    assert not job.run_dir.exists()
    assert migrate(sweep) == [("kv1_s0_6af05e5815", job.run_dir.name)]
    assert (job.run_dir / "results.json").is_file() and migrate(sweep) == []


@pytest.mark.slow
def test_cli_reports_unknown_key_without_training():
    out = run_cli(["trainer.max_stepz=3", "logger=none"])
    assert out.returncode == 2
    assert "max_stepz" in out.stderr and "max_steps" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.slow
def test_a_non_editable_install_trains_from_outside_the_checkout(tmp_path):
    """The wheel carries conf/ (package data): installed apart from the checkout, run from an unrelated folder."""
    wheel_dir, target = tmp_path / "wheel", tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheel_dir), str(REPO)],
                   check=True, capture_output=True)  # fmt: skip
    (wheel,) = wheel_dir.glob("workbench-*.whl")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(wheel)],
                   check=True, capture_output=True)  # fmt: skip
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {"PYTHONPATH": str(target), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    where = subprocess.run([sys.executable, "-c", "import workbench; print(workbench.__file__)"], cwd=elsewhere,
                           env=env, capture_output=True, text=True, check=True)  # fmt: skip
    assert Path(where.stdout.strip()).is_relative_to(target)
    out = subprocess.run(
        [sys.executable, "-m", "workbench.train", "model=tiny", "model.n_layers=2", "trainer.max_steps=2",
         "optim.warmup_steps=1", "trainer.val_check_interval=2", "data.val_tokens=512", "data.seq_len=64",
         "logger=none", "trainer.progress_bar=false", f"data.cache_dir={tmp_path / 'cache'}", "hydra.run.dir=run"],
        cwd=elsewhere, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    assert (elsewhere / "run" / "results.json").is_file()


def test_a_multirun_without_a_grid_sweeps_the_command_line(tmp_path):
    """`--multirun seed=1,2` alone (no `+ablation`): one job per value; an error in it names no grid or arm."""
    plans = planned_jobs(["model=tiny", "seed=1,2", f"hydra.sweep.dir={tmp_path}"], multirun=True)
    assert [p[-1].cfg.seed for p in plans] == [1, 2] and len({p[-1].run_dir for p in plans}) == 2
    with pytest.raises(ConfigError, match=r"^model\.window: its interpolation does not resolve"):
        planned_jobs(["seed=1,2", "model.window=${model.window}", f"hydra.sweep.dir={tmp_path}"], multirun=True)
    assert not list(tmp_path.iterdir())
