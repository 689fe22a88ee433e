"""Start-up cost of the CLI, side by side: the imports, an error exit, and a 4-step tiny run, in wall seconds.

Every row is a fresh `python` subprocess (nothing cached in-process), in a temporary working directory (the tiny
run's Hydra outputs land there) with this checkout first on PYTHONPATH. Rows take turns within each of
`--repeats` rounds, so a shared machine's load falls on all alike; the table gives the median, the fastest, and
the median over `import torch`'s. Each row must exit as expected (the misspelt key: 2, from the validator);
otherwise the exit status is 1. `--quick`: one round of the two import rows that bracket torch.
Usage: `python -m benchmarks.startup [--repeats 5] [--quick]`.
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from tabulate import tabulate

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Row:
    name: str
    argv: tuple[str, ...]  # after `python`
    expected_rc: int = 0

    @property
    def command(self) -> str:
        return shlex.join(["python", *self.argv])


ROWS = (
    Row("import torch", ("-c", "import torch")),
    Row("import workbench.train", ("-c", "import workbench.train")),
    Row("import lightning", ("-c", "import lightning")),
    Row("CLI error exit", ("-m", "workbench.train", "trainer.max_stepz=1"), expected_rc=2),
    Row("tiny run, 4 steps", ("-m", "workbench.train", "model=tiny", "trainer.max_steps=4", "logger=none",
                              "trainer.progress_bar=false", "data.val_tokens=1024", "trainer.val_check_interval=4",
                              "optim.warmup_steps=1")),  # the default warmup (50) exceeds 4 steps: a config error
)  # fmt: skip
QUICK = ROWS[:2]


def time_row(row: Row, cwd: Path) -> tuple[float, int, str]:
    """Wall seconds, exit status and the last stderr line of one run of `row`."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    start = time.perf_counter()
    p = subprocess.run([sys.executable, *row.argv], cwd=cwd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    return wall, p.returncode, (p.stderr.strip().splitlines() or [""])[-1]


def measure(rows: tuple[Row, ...], repeats: int) -> dict[str, dict[str, object]]:
    """Per row: each round's seconds, and the exit statuses that differ from the expected one (with stderr)."""
    out: dict[str, dict[str, object]] = {r.name: {"row": r, "seconds": [], "unexpected": []} for r in rows}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(repeats):
            for row in rows:
                wall, rc, err = time_row(row, Path(tmp))
                out[row.name]["seconds"].append(wall)
                if rc != row.expected_rc:
                    out[row.name]["unexpected"].append(f"exit {rc} (expected {row.expected_rc}): {err}")
    return out


def main(argv: list[str] | None = None) -> dict[str, dict[str, object]]:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.startup", description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="rounds; every row runs once per round")
    parser.add_argument("--quick", action="store_true", help="one round of the import torch and workbench.train rows")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        raise ValueError(f"--repeats: got {args.repeats}; allowed: an int >= 1")
    rows, repeats = (QUICK, 1) if args.quick else (ROWS, args.repeats)
    results = measure(rows, repeats)
    base = statistics.median(results[ROWS[0].name]["seconds"])
    table = []
    for name, r in results.items():
        median = statistics.median(r["seconds"])
        table.append([name, f"{median:.2f}", f"{min(r['seconds']):.2f}", f"{median / base:.2f}x",
                      "ok" if not r["unexpected"] else "UNEXPECTED"])  # fmt: skip
    print(f"start-up, wall seconds over {repeats} round(s) in turns, {sys.executable}, load average "
          f"{os.getloadavg()[0]:.2f}")  # fmt: skip
    print(tabulate(table, ["what", "median s", "min s", "/ import torch", "exit"], intfmt=","))
    for name, r in results.items():
        print(f"{name}: $ {r['row'].command}")
    for name, r in results.items():
        for problem in r["unexpected"]:
            print(f"{name}: {problem}")
    return results


if __name__ == "__main__":
    sys.exit(1 if any(r["unexpected"] for r in main().values()) else 0)
