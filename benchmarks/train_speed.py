"""Training throughput: tokens/s and MFU per preset, on this CPU or a CUDA GPU.

Runs a few real optimiser steps through `workbench.training.run` (its TokenThroughput and `workbench.accounting`
supply the numbers) on the embedded stdlib corpus, in a temporary run dir with no W&B. MFU is against
`workbench.peak`'s peak (a GPU's datasheet dense peak, a CPU's measured and cached matmul rate) or `--peak-flops`;
the header names which.
On CUDA the attention auto path runs flash (SDPA) on global layers and compiled flex_attention on local ones.

`--modes` puts distillation beside plain training, one row per preset and mode: `off_policy` (Gemma's 256
sampled teacher logits per token) and `on_policy` (GKD: half the rows are the student's own continuations, sampled
with the KV cache in one batch; `sampled tok/s` counts them). The teacher is the student's preset trained for the
warmup steps only (its weights do not change the speed), a planned job run first.

Usage: `python -m benchmarks.train_speed [--presets tiny small] [--steps 30] [--precision bf16-mixed]
[--batch-size 8] [--seq-len N] [--device auto|cpu|cuda] [--compile] [--peak-flops F] [--quick]
[--modes none off_policy on_policy] [--prompt-len 32] [--new-tokens 32]`.
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
MODES = ("none", "off_policy", "on_policy")
MIX = 0.5  # on_policy: the fraction of each batch's rows the student samples


def mode_overrides(mode: str, preset: str, steps: int, run_dir: Path, prompt_len: int, new_tokens: int) -> list[str]:
    """The distill keys of a mode; the teacher `preset` after the warmup steps only, shared by the modes."""
    if mode == "none":
        return []
    teacher = [f"distill.teacher_model={preset}", f"distill.teacher_steps={_warmup(steps)}",
               f"distill.cache_dir={run_dir / 'distill'}"]  # fmt: skip
    if mode == "off_policy":
        return ["distill=sampled", *teacher]
    return [
        "distill=on_policy",
        f"distill.on_policy_mix={MIX}",
        f"distill.prompt_len={prompt_len}",
        f"distill.new_tokens={new_tokens}",
        *teacher,
    ]


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
    distill: list[str] | None = None,
) -> dict[str, object]:
    overrides = [f"model={preset}", "logger=none", f"trainer.max_steps={steps}", f"trainer.val_check_interval={steps}",
                 f"trainer.precision={precision}", f"data.batch_size={batch_size}", "data.val_tokens=512",
                 f"trainer.throughput_window={max(2, steps // 2)}", "trainer.progress_bar=false",
                 f"trainer.accelerator={device}", f"trainer.compile={compile}",
                 f"optim.warmup_steps={_warmup(steps)}",  # the schedule must fit the run; speed ignores it
                 *([f"data.seq_len={seq_len}"] if seq_len else []),
                 *([f"trainer.peak_flops={peak_flops}"] if peak_flops else []), *(distill or [])]  # fmt: skip
    name = preset if not distill else f"{preset}_{distill[0].removeprefix('distill=')}"
    return train(compose_train(overrides), run_dir / name)


def _warmup(steps: int) -> int:
    return max(1, steps // 2)


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
    parser.add_argument("--modes", nargs="+", default=["none"], choices=MODES, help="plain training, distillation")
    parser.add_argument("--prompt-len", type=int, default=32, help="on_policy: prompt tokens of a sampled row")
    parser.add_argument("--new-tokens", type=int, default=32, help="on_policy: tokens the student samples per row")
    args = parser.parse_args(argv)
    _check_device(args.device)
    if args.quick:
        args.steps, args.batch_size, args.seq_len = QUICK["steps"], QUICK["batch_size"], QUICK["seq_len"]
    rows, results = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for preset, mode in ((p, m) for p in args.presets for m in args.modes):
            distill = mode_overrides(mode, preset, args.steps, Path(tmp), args.prompt_len, args.new_tokens)
            r = measure(preset, args.steps, args.precision, args.batch_size, Path(tmp), args.device, args.seq_len,
                        args.compile, args.peak_flops, distill)  # fmt: skip
            results.append(r)
            tokens_per_step = r["tokens_seen"] // r["steps"]
            sampled = _sampled_per_s(r, args.batch_size, args.new_tokens) if mode == "on_policy" else "-"
            rows.append([preset, mode, f"{r['params']['total'] / 1e6:.2f}M", tokens_per_step,
                         f"{r['tokens_per_s']:,.0f}", sampled, f"{r['mfu']:.1%}",
                         f"{r['peak_flops'] / 1e9:,.0f}"])  # fmt: skip
    print(f"$ python -m benchmarks.train_speed {shlex.join(argv if argv is not None else sys.argv[1:])}")
    print(f"train throughput, {args.precision}, batch {args.batch_size}, {args.steps} steps, device {r['device']} "
          f"({r['device_name']}), torch {r['torch_version']}, {r['threads']} threads, compile {args.compile}; "
          f"MFU against {r['peak_flops_source']}")  # fmt: skip
    headers = ["preset", "mode", "params", "tokens/step", "tokens/s", "sampled tok/s", "MFU", "peak GFLOP/s"]
    print(tabulate(rows, headers, intfmt=","))
    return results


def _sampled_per_s(r: dict, batch_size: int, new_tokens: int) -> str:
    """Tokens the student sampled per second: its on-policy rows per batch x new_tokens, at the batches' rate."""
    sampled_per_step = round(MIX * batch_size) * new_tokens
    return f"{sampled_per_step * r['tokens_per_s'] / (r['tokens_seen'] // r['steps']):,.0f}"


if __name__ == "__main__":
    main()
