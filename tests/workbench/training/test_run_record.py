"""What a run records is what it ran: results.json carries the precision, device, strategy and world size Lightning
used, and config.yaml the precision (`auto` as resolved on this machine), so a reader never sees a request."""

import json

from omegaconf import OmegaConf

from tests.workbench.train_helpers import FAST, compose_cfg
from workbench.precision import resolve_precision
from workbench.training.grid import run_id
from workbench.training.jobs import train


def test_results_and_config_record_what_ran(tmp_path):
    overrides = [*[o for o in FAST if not o.startswith("trainer.precision")], "trainer.precision=auto",
                 "trainer.accelerator=cpu", "trainer.max_steps=2", "trainer.val_check_interval=2", "logger=none",
                 "data.val_tokens=256"]  # fmt: skip
    cfg = compose_cfg(overrides, tmp_path / "cache")
    results = train(cfg, tmp_path / "run")
    expected, _ = resolve_precision("auto", "cpu")
    assert results["precision"] == expected  # Lightning's own precision string
    assert results["device"] == "cpu" and results["strategy"] == "SingleDeviceStrategy" and results["world_size"] == 1
    saved = OmegaConf.load(tmp_path / "run" / "config.yaml")
    assert saved.trainer.precision == expected
    on_disk = json.loads((tmp_path / "run" / "results.json").read_text())
    assert {k: on_disk[k] for k in ("precision", "device", "strategy", "world_size")} == {
        "precision": expected, "device": "cpu", "strategy": "SingleDeviceStrategy", "world_size": 1}  # fmt: skip
    # `auto` resolved in the file names the same run: migrate (which reads config.yaml) keeps its id
    values = OmegaConf.to_container(saved, resolve=True)
    assert run_id(values, values["ablation"]["arm"], values["seed"]) == run_id(cfg)
