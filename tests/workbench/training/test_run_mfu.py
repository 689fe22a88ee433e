"""MFU repeats: two identical runs divide by the same peak (the second reads the first's cached measurement), so
their MFU differs only as much as their tokens/s does, and results.json says where the peak came from."""

import json

import pytest

from tests.workbench.train_helpers import FAST, compose_cfg
from workbench import peak
from workbench.training.jobs import train


def test_two_identical_runs_share_the_cached_peak(tmp_path, monkeypatch):
    cache = tmp_path / "peak_flops.json"
    monkeypatch.setattr(peak, "CACHE", cache)
    cfg = compose_cfg(["model=tiny", "logger=none", "trainer.max_steps=4", "trainer.val_check_interval=4", *FAST,
                       "trainer.peak_flops=null"], tmp_path / "data")  # fmt: skip
    first, second = (train(cfg, tmp_path / name) for name in ("a", "b"))
    assert first["peak_flops"] == second["peak_flops"] > 0
    assert first["peak_flops_source"] == second["peak_flops_source"]
    assert first["peak_flops_source"].startswith("measured ") and str(cache) in first["peak_flops_source"]
    assert json.loads(cache.read_text())  # one entry, written by the first run
    for r in (first, second):  # MFU = achieved FLOP/s over the peak, in the accounting's own FLOP count
        achieved = r["train_flops_per_token"] * r["tokens_per_s"]
        assert r["mfu"] == pytest.approx(achieved / r["peak_flops"], rel=1e-9)
    assert second["mfu"] / first["mfu"] == pytest.approx(second["tokens_per_s"] / first["tokens_per_s"], rel=1e-9)
