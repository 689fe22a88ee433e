"""Hydra configuration: every preset has a conf/model file, overrides reach the model, bad keys fail clearly."""

import pytest
from hydra.errors import ConfigCompositionException

from tests.workbench.train_helpers import CONF_DIR, compose_cfg, run_cli
from workbench.config import ModelConfig
from workbench.presets import PRESETS
from workbench.training.overrides import UnknownKeyError, check_overrides
from workbench.training.run import run


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_has_a_model_file_equal_to_the_preset(name, tmp_path):
    assert (CONF_DIR / "model" / f"{name}.yaml").is_file()
    cfg = compose_cfg([f"model={name}"], tmp_path)
    assert ModelConfig.from_dict(cfg.model) == PRESETS[name]


def test_model_field_override(tmp_path):
    cfg = compose_cfg(["model=small", "model.window=32", "model.layer_pattern=global", "seed=3"], tmp_path)
    model = ModelConfig.from_dict(cfg.model)
    assert model == PRESETS["small"].replace(window=32, layer_pattern="global")
    assert cfg.seed == 3 and cfg.data.seq_len == 512


@pytest.mark.parametrize(
    ("override", "names"),
    [("trainer.max_stepz=3", ["max_stepz", "max_steps"]), ("model.windw=3", ["windw", "window"]),
     ("sed=3", ["sed", "seed"]), ("data.seq_len.x=1", ["data.seq_len.x"])],
)  # fmt: skip
def test_unknown_key_names_the_key_and_the_allowed_ones(override, names):
    with pytest.raises(UnknownKeyError) as e:
        check_overrides(["model=tiny", override])
    assert all(n in str(e.value) for n in names)


def test_struct_mode_rejects_unknown_keys_in_compose(tmp_path):
    with pytest.raises(ConfigCompositionException, match="max_stepz"):
        compose_cfg(["trainer.max_stepz=3"], tmp_path)


def test_cli_reports_unknown_key_without_training():
    out = run_cli(["trainer.max_stepz=3", "logger=none"])
    assert out.returncode != 0
    assert "max_stepz" in out.stderr and "max_steps" in out.stderr


def test_model_config_error_comes_before_compute(tmp_path):
    cfg = compose_cfg(["model.n_kv_heads=3", f"hydra.run.dir={tmp_path}"], tmp_path)
    with pytest.raises(ValueError, match="n_kv_heads: got 3"):
        run(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists()
