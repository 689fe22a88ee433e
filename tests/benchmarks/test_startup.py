import pytest

from benchmarks import startup
from benchmarks.startup import Row


@pytest.mark.slow
def test_quick_times_the_two_import_rows_side_by_side(capsys):
    results = startup.main(["--quick"])
    assert list(results) == ["import torch", "import workbench.train"]
    assert all(len(r["seconds"]) == 1 and not r["unexpected"] for r in results.values())
    torch_s, workbench_s = (r["seconds"][0] for r in results.values())
    assert workbench_s > torch_s, "importing workbench.train imports torch and more"
    out = capsys.readouterr().out
    rows = {line.split("  ")[0]: line.split() for line in out.splitlines()}
    assert rows["import torch"][-2:] == ["1.00x", "ok"] and rows["import workbench.train"][-1] == "ok"
    assert "import workbench.train: $ python -c 'import workbench.train'" in out


def test_an_unexpected_exit_is_reported_with_its_stderr():
    rows = (Row("fails", ("-c", "import sys; sys.exit('boom')")), Row("refuses", ("-c", "raise SystemExit(2)"), 2))
    results = startup.measure(rows, 2)
    assert results["fails"]["unexpected"] == ["exit 1 (expected 0): boom"] * 2
    assert results["refuses"]["unexpected"] == [] and len(results["refuses"]["seconds"]) == 2


def test_the_full_rows_are_the_ones_the_issue_names():
    commands = [r.command for r in startup.ROWS]
    assert commands[3] == "python -m workbench.train trainer.max_stepz=1" and startup.ROWS[3].expected_rc == 2
    assert commands[4] == ("python -m workbench.train model=tiny trainer.max_steps=4 logger=none "
                           "trainer.progress_bar=false data.val_tokens=1024 trainer.val_check_interval=4 "
                           "optim.warmup_steps=1")  # fmt: skip


def test_repeats_must_be_positive():
    with pytest.raises(ValueError, match="--repeats: got 0"):
        startup.main(["--repeats", "0"])
