"""Training throughput: tokens/s and MFU per preset, on this CPU or a CUDA GPU.

Runs a few real optimiser steps through `workbench.training.run` (Lightning's ThroughputMonitor and measure_flops
supply the numbers) on the embedded stdlib corpus, in a temporary run dir with no W&B. MFU is against the
datasheet peak Lightning knows for a GPU (or `--peak-flops`), and against a measured dense-matmul rate on CPU.
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
from lightning.fabric.utilities.throughput import get_available_flops

from analysis.presets_cli import print_table
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


def _check_device(device: str, precision: str, peak_flops: float | None) -> None:
    """Before any run: a CUDA device must exist, and MFU needs a peak (Lightning's table lacks some GPUs)."""
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device: got 'cuda'; allowed here: auto, cpu (no CUDA device is visible)")
    if device != "cpu" and torch.cuda.is_available() and peak_flops is None:
        dtype = torch.bfloat16 if "bf16" in precision else torch.float32
        if get_available_flops(torch.device("cuda"), dtype) is None:
            raise ValueError(f"--peak-flops: got None; Lightning has no {dtype} datasheet peak for "
                             f"{torch.cuda.get_device_name()}: pass it in FLOP/s (dense, no sparsity)")  # fmt: skip


def main(argv: list[str] | None = None) -> list[dict[str, object]]:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.train_speed", description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["tiny", "small"])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--precision", default="bf16-mixed", choices=["bf16-mixed", "32-true"])
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=None, help="default: the preset's max_seq_len")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--compile", action="store_true", help="torch.compile the model (trainer.compile)")
    parser.add_argument("--peak-flops", type=float, default=None, help="MFU denominator where Lightning has none")
    parser.add_argument("--quick", action="store_true", help=f"override steps, batch and length with {QUICK}")
    args = parser.parse_args(argv)
    _check_device(args.device, args.precision, args.peak_flops)
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
    cuda = r["device"].startswith("cuda")
    peak = (
        "the datasheet peak" if cuda and not args.peak_flops else "--peak-flops" if cuda else "a measured matmul peak"
    )
    print(f"$ python -m benchmarks.train_speed {shlex.join(argv if argv is not None else sys.argv[1:])}")
    print(f"train throughput, {args.precision}, batch {args.batch_size}, {args.steps} steps, device {r['device']} "
          f"({r['device_name']}), torch {r['torch_version']}, {r['threads']} threads, compile {args.compile}; "
          f"MFU against {peak}")  # fmt: skip
    print_table(["preset", "params", "tokens/step", "tokens/s", "MFU", "peak GFLOP/s"], rows)
    return results


if __name__ == "__main__":
    main()
