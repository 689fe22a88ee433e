import re
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
    assert total <= gpu_check.LIMIT_S == 480
    assert p.stdout.startswith(f"plan: {len(gpu_check.STEPS)} steps, {total} s of budget")
    for step in gpu_check.STEPS:
        assert f"{step.name} ({step.budget_s} s)" in p.stdout and f"$ {step.command}" in p.stdout


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
    assert lines[0].startswith("## GPU check: NVIDIA H200, CUDA 12.8, torch ") and lines[0].endswith("23 s of 480 s")
    header, rule, *rows = lines[2:]
    assert header == "| step | command | budget s | wall s | status | result | peak GiB |"
    assert rows == ["| a | `python -m x --y` | 10 | 3.2 | ok | 1.5x \\| fast | 2.00 |",
                    "| b | `python -c pass` | 20 | 20.0 | FAIL | timed out |  |"]  # fmt: skip
    assert rule.count("|") == header.count("|")


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
    assert (r.ok, r.result, r.peak_gib) == (True, "r", 1.5)
    r = gpu_check.run_step(Step("crash", ("-c", "import sys; sys.exit('boom')"), 30, ""))
    assert (r.ok, r.result) == (False, "exit 1: boom")
    r = gpu_check.run_step(Step("hang", ("-c", "import time; time.sleep(30)"), 1, ""))
    assert (r.ok, r.result) == (False, "timed out after 1 s") and r.wall_s < 10
