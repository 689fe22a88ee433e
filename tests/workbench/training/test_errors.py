"""`workbench.training.errors`: the translation of a composition failure ends on any exception chain."""

import signal
from contextlib import contextmanager

import pytest

from workbench.training.compose import CONF_DIR, checked_compose
from workbench.training.errors import ConfigError


@contextmanager
def deadline(seconds: int):
    """Fail instead of hanging: the bug below was an endless loop."""

    def stop(signum, frame):
        raise TimeoutError(f"still walking the exception chain after {seconds} s")

    before = signal.signal(signal.SIGALRM, stop)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, before)


def test_a_grid_error_is_one_line_when_omegaconf_keeps_causes(tmp_path, monkeypatch):
    """With OC_CAUSE=1, or any trace function set (a debugger, coverage), OmegaConf re-raises an error with itself
    as its `__cause__`: a grid file without its package line is still the one error, not an endless walk."""
    (tmp_path / "ablation").mkdir()
    (tmp_path / "ablation" / "mine.yaml").write_text("defaults:\n  - _base\n  - _self_\nablation:\n  name: mine\n"
                                                     "  arms:\n    a: {optim.lr: 0.01}\n")  # fmt: skip
    monkeypatch.setenv("OC_CAUSE", "1")
    with deadline(10), pytest.raises(ConfigError, match=r"its keys landed under 'ablation\.'.*# @package _global_"):
        checked_compose(["+ablation=mine", f"hydra.searchpath=[file://{tmp_path}]"], config_dir=CONF_DIR)
