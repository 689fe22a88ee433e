"""Experiment configs train in `precision: auto` unless they pin another precision and say why in the file."""

from pathlib import Path

import pytest
import yaml

EXPERIMENTS = sorted((Path(__file__).resolve().parents[2] / "workbench" / "conf" / "experiment").glob("*.yaml"))


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.stem)
def test_precision_is_auto_or_pinned_with_a_reason(path):
    precision = (yaml.safe_load(path.read_text()).get("trainer") or {}).get("precision", "auto")
    if precision != "auto":
        line = next(ln for ln in path.read_text().splitlines() if ln.strip().startswith("precision:"))
        previous = path.read_text().splitlines()
        reason = "#" in line or previous[previous.index(line) - 1].strip().startswith("#")
        assert reason, f"{path.name}: precision {precision} pinned without a comment saying why"


def test_the_grids_without_committed_results_use_auto():
    pinned = {p.stem for p in EXPERIMENTS if (yaml.safe_load(p.read_text()).get("trainer") or {}).get("precision")
              not in (None, "auto")}  # fmt: skip
    # study_cpu and recall_cpu: their committed studies ran in 32-true; reach_cpu: fp32 measured faster at its width
    assert pinned == {"study_cpu", "recall_cpu", "reach_cpu"}
