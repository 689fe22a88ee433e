"""Training throughput on this machine: tokens/s and MFU for the `tiny` and `small` presets.

Runs a few real optimiser steps through `workbench.training.run` (Lightning's ThroughputMonitor and measure_flops
supply the numbers) on the embedded stdlib corpus, in a temporary run dir with no W&B.
Usage: `python -m analysis.train_speed [--presets tiny small] [--steps 30] [--precision bf16-mixed] [--batch-size 8]`.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from hydra import compose, initialize_config_dir

from analysis.presets_cli import print_table
from workbench.training.config_store import register_presets
from workbench.training.overrides import CONF_DIR, VERSION_BASE
from workbench.training.run import run


def measure(preset: str, steps: int, precision: str, batch_size: int, run_dir: Path) -> dict[str, object]:
    overrides = [f"model={preset}", "logger=none", f"trainer.max_steps={steps}", f"trainer.val_check_interval={steps}",
                 f"trainer.precision={precision}", f"data.batch_size={batch_size}", "data.val_tokens=512",
                 f"trainer.throughput_window={max(2, steps // 2)}", "trainer.progress_bar=false"]  # fmt: skip
    with initialize_config_dir(str(CONF_DIR), version_base=VERSION_BASE):
        cfg = compose("train", overrides=overrides)
    return run(cfg, run_dir / preset)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m analysis.train_speed", description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["tiny", "small"])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--precision", default="bf16-mixed", choices=["bf16-mixed", "32-true"])
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args(argv)
    register_presets()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for preset in args.presets:
            r = measure(preset, args.steps, args.precision, args.batch_size, Path(tmp))
            tokens_per_step = r["tokens_seen"] // r["steps"]
            rows.append([preset, f"{r['params']['total'] / 1e6:.2f}M", tokens_per_step, f"{r['tokens_per_s']:,.0f}",
                         f"{r['mfu']:.1%}", f"{r['peak_flops'] / 1e9:,.0f}"])  # fmt: skip
    print(f"train throughput, {args.precision}, batch {args.batch_size}, {args.steps} steps, device {r['device']}, "
          f"{r['threads']} threads (MFU relative to the measured dense-matmul peak on CPU)")  # fmt: skip
    print_table(["preset", "params", "tokens/step", "tokens/s", "MFU", "peak GFLOP/s"], rows)


if __name__ == "__main__":
    main()
