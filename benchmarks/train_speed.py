"""Training throughput: tokens/s and MFU per preset, on this CPU or a CUDA GPU.

Runs a few real optimiser steps through `workbench.training.run` (its TokenThroughput and `workbench.accounting`
supply the numbers) on the embedded stdlib corpus, in a temporary run dir with no W&B. MFU is against
`workbench.peak`'s peak (a GPU's datasheet dense peak, a CPU's measured and cached matmul rate) or `--peak-flops`;
the header names which.
On CUDA the attention auto path runs flash (SDPA) on global layers and compiled flex_attention on local ones.

Usage: `python -m benchmarks.train_speed [--presets tiny small] [--steps 30] [--precision bf16-mixed]
[--batch-size 8] [--seq-len N] [--device auto|cpu|cuda] [--compile] [--peak-flops F] [--quick]`.
GPU benchmark: `python -m benchmarks.train_speed --presets base125m --device cuda --batch-size 16 --steps 50`.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
from pathlib import Path

import torch
from tabulate import tabulate

from workbench.training.compose import compose_train
from workbench.training.jobs import train

QUICK = {"steps": 2, "batch_size": 2, "seq_len": 64}  # a smoke run of the code path, seconds on CPU


def measure(
    preset: str,
    steps: int,
    precision: str,
    batch_size: int,
    run_dir: Path,
    device: str = "auto",
    seq_len: int | None = None,
    compile: bool = False,
    peak_flops: float | None = None,
) -> dict[str, object]:
    overrides = [f"model={preset}", "logger=none", f"trainer.max_steps={steps}", f"trainer.val_check_interval={steps}",
                 f"trainer.precision={precision}", f"data.batch_size={batch_size}", "data.val_tokens=512",
                 f"trainer.throughput_window={max(2, steps // 2)}", "trainer.progress_bar=false",
                 f"trainer.accelerator={device}", f"trainer.compile={compile}",
                 f"optim.warmup_steps={max(1, steps // 2)}",  # the schedule must fit the run; speed ignores it
                 *([f"data.seq_len={seq_len}"] if seq_len else []),
                 *([f"trainer.peak_flops={peak_flops}"] if peak_flops else [])]  # fmt: skip
    return train(compose_train(overrides), run_dir / preset)


def _check_device(device: str) -> None:
    """Before any run: a CUDA device must exist."""
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device: got 'cuda'; allowed here: auto, cpu (no CUDA device is visible)")


def main(argv: list[str] | None = None) -> list[dict[str, object]]:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.train_speed", description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["tiny", "small"])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--precision", default="bf16-mixed", choices=["bf16-mixed", "32-true"])
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=None, help="default: the preset's max_seq_len")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--compile", action="store_true", help="torch.compile the model (trainer.compile)")
    parser.add_argument("--peak-flops", type=float, default=None, help="MFU's peak FLOP/s (default: workbench.peak)")
    parser.add_argument("--quick", action="store_true", help=f"override steps, batch and length with {QUICK}")
    args = parser.parse_args(argv)
    _check_device(args.device)
    if args.quick:
        args.steps, args.batch_size, args.seq_len = QUICK["steps"], QUICK["batch_size"], QUICK["seq_len"]
    rows, results = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for preset in args.presets:
            r = measure(preset, args.steps, args.precision, args.batch_size, Path(tmp), args.device, args.seq_len,
                        args.compile, args.peak_flops)  # fmt: skip
            results.append(r)
            tokens_per_step = r["tokens_seen"] // r["steps"]
            rows.append([preset, f"{r['params']['total'] / 1e6:.2f}M", tokens_per_step, f"{r['tokens_per_s']:,.0f}",
                         f"{r['mfu']:.1%}", f"{r['peak_flops'] / 1e9:,.0f}"])  # fmt: skip
    print(f"$ python -m benchmarks.train_speed {shlex.join(argv if argv is not None else sys.argv[1:])}")
    print(f"train throughput, {args.precision}, batch {args.batch_size}, {args.steps} steps, device {r['device']} "
          f"({r['device_name']}), torch {r['torch_version']}, {r['threads']} threads, compile {args.compile}; "
          f"MFU against {r['peak_flops_source']}")  # fmt: skip
    print(tabulate(rows, ["preset", "params", "tokens/step", "tokens/s", "MFU", "peak GFLOP/s"], intfmt=","))
    return results


if __name__ == "__main__":
    main()
