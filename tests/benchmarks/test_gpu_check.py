import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from benchmarks import gpu_check
from benchmarks.gpu_check import Step, StepResult

ROOT = Path(__file__).resolve().parents[2]


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_dry_prints_every_step_with_its_command_and_budget():
    p = _run("-m", "benchmarks.gpu_check", "--dry")
    assert p.returncode == 0, p.stderr
    total = sum(s.budget_s for s in gpu_check.STEPS)
    assert total <= gpu_check.LIMIT_S == 900  # 15 minutes of one device, the pilot's 500 s included
    assert p.stdout.startswith(f"plan: {len(gpu_check.STEPS)} steps, {total} s of budget")
    for step in gpu_check.STEPS:
        assert f"{step.name} ({step.budget_s} s)" in p.stdout and f"$ {step.command}" in p.stdout
    pilot = gpu_check.STEPS[-1]
    assert pilot.key == "pilot" and pilot.budget_s == gpu_check.PILOT.budget_s <= 600  # 10 minutes of an H100
    assert "Trains: " + shlex.join(["python", *gpu_check.PILOT.train_argv()]) in p.stdout


def test_dry_with_steps_and_pilot_flags_plans_only_those_steps_with_that_pilot():
    p = _run("-m", "benchmarks.gpu_check", "--dry", "--step", "pilot", "--pilot-arms", "global", "r1_1", "local",
             "--pilot-seeds", "4", "--pilot-dir", "elsewhere", "--pilot-set", "trainer.max_steps=600")  # fmt: skip
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith(f"plan: 1 steps, {gpu_check.PILOT.budget_s} s of budget")
    assert "1. pilot: local:global ratio, global vs r1_1 vs local x 4 seeds" in p.stdout and "12 runs" in p.stdout
    assert "ablation.arm=global,r1_1,local 'ablation.seeds=[0,1,2,3]'" in p.stdout
    assert "ablation.baseline=global" in p.stdout and "hydra.sweep.dir=elsewhere" in p.stdout
    assert "hydra.sweep.dir=elsewhere trainer.max_steps=600\n" in p.stdout
    flags = "--pilot-arms global r1_1 local --pilot-seeds 4 --pilot-dir elsewhere --pilot-set trainer.max_steps=600"
    assert f"$ python -m benchmarks.gpu_check --probe pilot {flags}\n" in p.stdout + "\n"


@pytest.mark.parametrize(
    ("flags", "message"),
    [(["--pilot-arms", "r5_1"], "--pilot-arms: got ['r5_1']; allowed: two or more distinct arms"),
     (["--pilot-arms", "r5_1", "r5_1"], "--pilot-arms: got ['r5_1', 'r5_1']"),
     (["--pilot-seeds", "1"], "--pilot-seeds: got 1; allowed: 2 or more"),
     (["--step", "nope"], "argument --step: invalid choice: 'nope'")],
)  # fmt: skip
def test_bad_pilot_flags_exit_2_naming_the_flag(flags, message, capsys):
    with pytest.raises(SystemExit) as stop:
        gpu_check.main(["--dry", *flags])
    out = capsys.readouterr()
    assert stop.value.code == 2 and out.out == "" and message in out.err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal where no CUDA device exists")
def test_without_cuda_it_exits_2_with_one_error_line():
    p = _run("-m", "benchmarks.gpu_check", "--out", "never-written.md")
    assert (p.returncode, p.stdout) == (2, "")
    assert len(p.stderr.splitlines()) == 1 and p.stderr.startswith("error: no CUDA device")
    assert not (ROOT / "never-written.md").exists()


@pytest.mark.slow
def test_the_cuda_test_ids_still_name_every_cuda_case():
    """A renamed or added CUDA test would silently drop out of the check: find them all, and collect the ids."""
    skipped_without_cuda = r"@pytest\.mark\.skipif\(not torch\.cuda\.is_available\(\)[^\n]*\n(?:@[^\n]*\n)*def (\w+)"
    found = {f"{path.relative_to(ROOT)}::{name}" for path in (ROOT / "tests").rglob("test_*.py")
             for name in re.findall(skipped_without_cuda, path.read_text())}  # fmt: skip
    assert found == set(gpu_check.CUDA_TESTS)
    p = _run("-m", "pytest", *gpu_check.CUDA_TESTS, "--collect-only", "-q", "-p", "no:cacheprovider")
    assert f"{gpu_check.CUDA_TEST_CASES} tests collected" in p.stdout, p.stdout[-2000:]


def test_markdown_table_has_the_device_every_command_and_escaped_cells():
    steps = [Step("a", ("-m", "x", "--y"), 10, ""), Step("b", ("-c", "pass"), 20, "")]
    results = [StepResult(steps[0], 3.25, True, "1.5x | fast", 2.0), StepResult(steps[1], 20.0, False, "timed out")]
    lines = gpu_check.markdown_table("NVIDIA H200, CUDA 12.8", results).splitlines()
    assert lines[0].startswith("## GPU check: NVIDIA H200, CUDA 12.8, torch ") and lines[0].endswith("23 s of 900 s")
    header, rule, *rows = lines[2:]
    assert header == "| step | command | budget s | wall s | status | result | peak GiB |"
    assert rows == ["| a | `python -m x --y` | 10 | 3.2 | ok | 1.5x \\| fast | 2.00 |",
                    "| b | `python -c pass` | 20 | 20.0 | FAIL | timed out |  |"]  # fmt: skip
    assert rule.count("|") == header.count("|")


def test_a_steps_extra_rows_follow_it_with_only_a_label_and_a_result():
    step = Step("pilot: x", ("-m", "x"), 10, "", "pilot")
    rows = (("r5_1 (baseline)", "median 330 steps"), ("global - r5_1", "MDE a | b"))
    lines = gpu_check.markdown_table("dev", [StepResult(step, 5.0, True, "6 of 6", None, rows)]).splitlines()[4:]
    assert lines == ["| pilot: x | `python -m x` | 10 | 5.0 | ok | 6 of 6 |  |",
                     "| pilot: r5_1 (baseline) |  |  |  |  | median 330 steps |  |",
                     "| pilot: global - r5_1 |  |  |  |  | MDE a \\| b |  |"]  # fmt: skip


@pytest.mark.parametrize(
    ("summary", "returncode", "ok"),
    [("15 passed in 80.1s", 0, True), ("15 passed, 2 warnings in 80.1s", 0, True),
     ("14 passed, 1 skipped in 80.1s", 0, False), ("14 passed, 1 failed in 80.1s", 1, False),
     ("15 passed in 80.1s", 1, False)],
)  # fmt: skip
def test_read_pytest_wants_every_cuda_case_run_and_passed(summary, returncode, ok):
    assert gpu_check.read_pytest(f"....\nSKIPPED [1] x\n{summary}\n", returncode)[0] is ok


def test_run_step_reads_the_marked_report_and_stops_at_the_budget():
    report = f'print(\'noise\'); print(\'{gpu_check.MARK}\' + \'{{"ok": true, "result": "r", "peak_gib": 1.5}}\')'
    r = gpu_check.run_step(Step("report", ("-c", f"{report}; print('more noise')"), 30, ""))
    assert (r.ok, r.result, r.peak_gib, r.rows) == (True, "r", 1.5, ())
    rows = f'print(\'{gpu_check.MARK}\' + \'{{"ok": false, "result": "r", "peak_gib": null, "rows": [["a", "b"]]}}\')'
    r = gpu_check.run_step(Step("rows", ("-c", rows), 30, ""))
    assert (r.ok, r.peak_gib, r.rows) == (False, None, (("a", "b"),))
    r = gpu_check.run_step(Step("crash", ("-c", "import sys; sys.exit('boom')"), 30, ""))
    assert (r.ok, r.result) == (False, "exit 1: boom")
    r = gpu_check.run_step(Step("hang", ("-c", "import time; time.sleep(30)"), 1, ""))
    assert (r.ok, r.result) == (False, "timed out after 1 s") and r.wall_s < 10
