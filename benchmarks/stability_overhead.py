"""Step time with the stability monitors off and on, measured side by side in one process.

Trains the same config (`workbench.training.run`, stdlib corpus, no W&B) with `trainer.monitor_every=0` and
`=N`, alternating the two `--repeats` times so machine load hits both alike, and prints the median time per
optimiser step (training time from Lightning's ThroughputMonitor; validation excluded) and the overhead.
Then, less exposed to load: the extra time of one probed train step (`workbench.timing.train_step`: forward,
backward, AdamW) over a plain one, alternating 2 x `--reps` times on the same batch, and that cost spread over N
steps.
Usage: `python -m benchmarks.stability_overhead [--preset small] [--steps 40] [--every 10] [--repeats 2]`.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from tabulate import tabulate

from workbench import build_model, get_preset
from workbench.probes import attach_probes, detach_probes
from workbench.timing import train_step
from workbench.training.compose import compose_train
from workbench.training.jobs import train


def step_time(preset: str, steps: int, every: int, batch_size: int, run_dir: Path) -> tuple[float, dict]:
    """Seconds per optimiser step, averaged over the whole run, and the run's results."""
    overrides = [f"model={preset}", "logger=csv", f"trainer.max_steps={steps}", f"trainer.val_check_interval={steps}",
                 f"trainer.monitor_every={every}", "trainer.precision=bf16-mixed", f"data.batch_size={batch_size}",
                 f"optim.warmup_steps={steps // 4}",
                 "data.val_tokens=512", f"trainer.throughput_window={steps}", "trainer.progress_bar=false"]  # fmt: skip
    r = train(compose_train(overrides), run_dir)
    return r["tokens_seen"] / r["tokens_per_s"] / r["steps"], r


def probed_step_cost(preset: str, batch_size: int, reps: int) -> tuple[float, float]:
    """Median seconds of a plain and of a probed train step (bf16-mixed, AdamW) at the preset's context."""
    cfg = get_preset(preset)
    model = build_model(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randint(0, cfg.vocab_size, (batch_size, cfg.max_seq_len))
    times: dict[bool, list[float]] = {False: [], True: []}
    for i in range(2 * reps + 2):  # the first two: warm-up (the first also allocates AdamW's state)
        probed = bool(i % 2)
        if probed:
            attach_probes(model)
        start = time.perf_counter()
        train_step(model, opt, x, "bf16-mixed")
        if i >= 2:
            times[probed].append(time.perf_counter() - start)
        detach_probes(model)
    return statistics.median(times[False]), statistics.median(times[True])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.stability_overhead",
                                     description=__doc__.splitlines()[0])  # fmt: skip
    parser.add_argument("--preset", default="small")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--every", type=int, default=10, help="trainer.monitor_every of the monitored runs")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--reps", type=int, default=10, help="probed and plain steps of the direct measurement")
    args = parser.parse_args(argv)
    if args.every < 1:
        raise ValueError(f"--every: got {args.every}; allowed: a positive number of steps")
    times: dict[int, list[float]] = {0: [], args.every: []}
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            for every in times:
                seconds, r = step_time(args.preset, args.steps, every, args.batch_size, Path(tmp) / f"{every}_{repeat}")
                times[every].append(seconds)
    off = statistics.median(times[0])
    rows = [[f"every {every}" if every else "off", f"{statistics.median(t) * 1e3:,.1f}",
             " ".join(f"{x * 1e3:,.1f}" for x in t), f"{statistics.median(t) / off - 1:+.1%}"]
            for every, t in times.items()]  # fmt: skip
    print(f"stability monitors: {args.preset}, bf16-mixed, {r['tokens_seen'] // r['steps']:,} tokens/step,"
          f" {args.steps} steps x {args.repeats} repeats (alternating), device {r['device']}, "
          f"{r['threads']} threads")  # fmt: skip
    print(tabulate(rows, ["monitors", "ms/step (median)", "ms/step (each repeat)", "overhead"], intfmt=","))
    plain, probed = probed_step_cost(args.preset, args.batch_size, args.reps)
    print(f"\none train step, batch {args.batch_size} x {get_preset(args.preset).max_seq_len}, median of "
          f"{args.reps} each: plain {plain * 1e3:,.1f} ms, probed {probed * 1e3:,.1f} ms ({probed / plain - 1:+.1%}); "
          f"monitoring every {args.every} steps: {(probed / plain - 1) / args.every:+.2%} per step")  # fmt: skip


if __name__ == "__main__":
    main()
