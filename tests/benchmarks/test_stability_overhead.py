import re
from pathlib import Path

import pytest

from benchmarks import stability_overhead

SMOKE = "--preset tiny --steps 4 --every 2 --repeats 1 --batch-size 2 --reps 1"


def test_plain_and_monitored_runs_alternate_and_differ_in_the_monitors(monkeypatch, capsys):
    """The compared runs are the same training with and without the stability metrics, side by side."""
    original, seen = stability_overhead.train, []

    def recording_run(cfg, run_dir):
        r = original(cfg, run_dir)
        header = (Path(run_dir) / "metrics.csv").read_text().splitlines()[0]
        seen.append((cfg.trainer.monitor_every, "stability/max_logit/layer0" in header.split(",")))
        return r

    monkeypatch.setattr(stability_overhead, "train", recording_run)
    stability_overhead.main(SMOKE.split())
    assert seen == [(0, False), (2, True)]
    out = capsys.readouterr().out
    off = next(line.split() for line in out.splitlines() if line.startswith("off "))
    assert off[-1] == "+0.0%"
    m = re.search(r"plain ([\d.,]+) ms, probed ([\d.,]+) ms \(([+-][\d.]+)%\); .*: ([+-][\d.]+)% per step", out)
    plain, probed, overhead, per_step = (float(g.replace(",", "")) for g in m.groups())
    assert overhead == pytest.approx(100 * (probed / plain - 1), abs=0.2)
    assert per_step == pytest.approx(overhead / 2, abs=0.04)  # both printed rounded


def test_every_must_be_positive():
    with pytest.raises(ValueError, match="--every: got 0"):
        stability_overhead.main(["--every", "0"])
