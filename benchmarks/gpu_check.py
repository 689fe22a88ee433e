"""One CUDA device, at most 15 minutes: what the CPU machines cannot check, in one markdown table.

Steps, each a subprocess with its own time budget (a hung compile cannot eat the others' time): the CUDA-only
attention tests (flex and flash against the dense mask, forward and backward, local and soft-capped layers);
`base125m` training tokens/s and MFU, bf16-mixed and compiled, through `benchmarks.train_speed`'s code path, with
its peak memory; prefill of a 5:1 model with W = 1,024 at 8,192 tokens under the flex and dense-mask attention
paths, side by side (`benchmarks.throughput`'s measurement), with their peak memory; the KV cache allocated on
the device, measured (`torch.cuda.memory_allocated`) against `workbench.accounting.kv_cache_bytes`; and a pilot of
the local:global ratio study (`benchmarks.ratio_pilot`: two arms of `local_global_ratio` on
`experiment=retrieval_gpu`, 3 seeds each, through the training CLI), which measures the seed noise of its learning
speed and the MDE at 4, 8 and 16 seeds, one row per arm and per comparison. The pilot takes 500 s of the 900; the
other steps' budgets were trimmed to fit it (from 165/195/80/30 s to 150/150/70/30 s). The table, with the device and
every command, goes to stdout and `--out`. MFU is against a dense bf16 matmul rate measured on the device: Lightning's
datasheet table has no entry for a plain "NVIDIA H200" and lists Hopper's sparse peaks.
Usage: `python -m benchmarks.gpu_check [--out gpu_check.md] [--step KEY ...] [--pilot-arms BASELINE ARM ...]
[--pilot-seeds N] [--pilot-dir DIR] [--pilot-set KEY=VALUE ...]`; `--step` runs only the named steps (a device lent
for at most 10 minutes a command runs the check in two calls: `--step cuda_tests train prefill kv_cache`, then
`--step pilot`); `--dry` prints the plan anywhere and exits 0; without `--dry` and without CUDA it exits 2. Exit 1
when a step fails.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from benchmarks import ratio_pilot
from benchmarks.ratio_pilot import Pilot

ROOT = Path(__file__).resolve().parents[1]
LIMIT_S = 900
CUDA_TESTS = (  # every test that skips without CUDA (tests/benchmarks/test_gpu_check.py keeps this list whole)
    "tests/workbench/blocks/test_attention.py::test_cuda_auto_path_equals_dense_forward_and_gradients",  # 12 cases
    "tests/workbench/blocks/test_attention.py::test_cuda_model_auto_path_equals_dense_logits_and_gradients",
    "tests/workbench/blocks/test_attention.py::test_cuda_bf16_autocast_auto_path_equals_dense",  # 2 cases
)
CUDA_TEST_CASES = 15
PYTEST_FLAGS = ("-q", "-rs", "-p", "no:cacheprovider")
TRAIN = {"preset": "base125m", "steps": 50, "precision": "bf16-mixed", "batch_size": 16, "compile": True}
PREFILL = {"preset": "base125m", "context": 8192, "window": 1024, "warmup": 2, "repeats": 5}
KV = (("base125m", 8192), ("gemma3-27b", 32768))
PROBES = ("train", "prefill", "kv_cache", "pilot")
PILOT = Pilot()  # r5_1 vs global, 3 seeds, 500 s


@dataclass(frozen=True)
class Step:
    name: str
    argv: tuple[str, ...]  # after `python`
    budget_s: int
    what: str
    key: str = ""  # what `--step` names it by

    @property
    def command(self) -> str:
        return shlex.join(["python", *self.argv])


@dataclass(frozen=True)
class StepResult:
    step: Step
    wall_s: float
    ok: bool
    result: str
    peak_gib: float | None = None
    rows: tuple[tuple[str, str], ...] = ()  # (label, result) rows below the step's own (the pilot's per arm)


def _probe(name: str) -> tuple[str, ...]:
    return ("-m", "benchmarks.gpu_check", "--probe", name)


def steps(pilot: Pilot = PILOT) -> tuple[Step, ...]:
    """The check's steps, the pilot as `pilot` sets it."""
    train = shlex.join(["python", *pilot.train_argv()])
    return (
        Step("CUDA tests", ("-m", "pytest", *CUDA_TESTS, *PYTEST_FLAGS), 150,
             f"the {CUDA_TEST_CASES} cases that skip without CUDA: compiled flex and flash against the dense mask, "
             "forward and backward, local and soft-capped layers, fp32 and bf16", "cuda_tests"),
        Step("train base125m (bf16-mixed, compiled)", _probe("train"), 150,
             "benchmarks.train_speed.measure: base125m, bf16-mixed, torch.compile, batch 16, 50 steps; tokens/s, MFU, "
             "torch.cuda.max_memory_allocated", "train"),
        Step("prefill 8k, 5:1 W=1,024: flex vs dense", _probe("prefill"), 70,
             "benchmarks.throughput.measure: prefill of base125m at 8,192 tokens, window 1,024, attention_path flex "
             "and dense in turns; their logits must agree", "prefill"),
        Step("KV cache on CUDA: measured == computed", _probe("kv_cache"), 30,
             "Transformer.new_cache on the device (base125m @8,192, gemma3-27b @32,768, bf16): memory_allocated "
             "growth == workbench.accounting.kv_cache_bytes == KVCache.nbytes", "kv_cache"),
        Step(f"pilot: local:global ratio, {' vs '.join(pilot.arms)} x {pilot.seeds} seeds",
             (*_probe("pilot"), *pilot.probe_flags()), pilot.budget_s,
             f"benchmarks.ratio_pilot: {pilot.runs} runs of experiment=retrieval_gpu (one rate per arm, not "
             "bracketed), read by workbench.measures/decide: per arm steps_to median and seed SD, solved share, "
             "tokens/s; the paired MDE at 4, 8, 16 seeds. Trains: " + train, "pilot"),
    )  # fmt: skip


STEPS = steps()
STEP_KEYS = tuple(s.key for s in STEPS)
MARK = "gpu_check result: "  # a probe's last word, among whatever else Lightning or torch print


# the table -----------------------------------------------------------------------------------------------------
def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown_table(device: str, results: list[StepResult]) -> str:
    """The report: a title naming the device and the total time, then one row per step with its command."""
    total = sum(r.wall_s for r in results)
    lines = [f"## GPU check: {device}, torch {torch.__version__}, {total:.0f} s of {LIMIT_S} s", "",
             "| step | command | budget s | wall s | status | result | peak GiB |",
             "|---|---|---:|---:|---|---|---:|"]  # fmt: skip
    for r in results:
        peak = "" if r.peak_gib is None else f"{r.peak_gib:.2f}"
        cells = [r.step.name, f"`{r.step.command}`", str(r.step.budget_s), f"{r.wall_s:.1f}",
                 "ok" if r.ok else "FAIL", r.result, peak]  # fmt: skip
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
        for label, result in r.rows:
            sub = [f"{r.step.key or r.step.name}: {label}", "", "", "", "", result, ""]
            lines.append("| " + " | ".join(_cell(c) for c in sub) + " |")
    return "\n".join(lines) + "\n"


def plan(chosen: tuple[Step, ...] = STEPS) -> str:
    lines = [f"plan: {len(chosen)} steps, {sum(s.budget_s for s in chosen)} s of budget (limit {LIMIT_S} s)"]
    lines += [f"{i}. {s.name} ({s.budget_s} s): {s.what}\n   $ {s.command}" for i, s in enumerate(chosen, 1)]
    return "\n".join(lines)


# running the steps ---------------------------------------------------------------------------------------------
def run_step(step: Step) -> StepResult:
    """Run one step from the repository root in its own process group (compile workers die with it on timeout)
    and read its outcome."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, *step.argv], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env, start_new_session=True)  # fmt: skip
    try:
        out, err = proc.communicate(timeout=step.budget_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        return StepResult(step, time.perf_counter() - start, False, f"timed out after {step.budget_s} s")
    wall = time.perf_counter() - start
    if step.argv[:2] == ("-m", "pytest"):
        return StepResult(step, wall, *read_pytest(out, proc.returncode))
    reports = [line.removeprefix(MARK) for line in out.splitlines() if line.startswith(MARK)]
    if proc.returncode != 0 or not reports:
        return StepResult(step, wall, False, f"exit {proc.returncode}: {_last_line(err or out)}")
    report = json.loads(reports[-1])
    rows = tuple((str(label), str(result)) for label, result in report.get("rows", []))
    return StepResult(step, wall, report["ok"], report["result"], report["peak_gib"], rows)


def _last_line(out: str) -> str:
    lines = [line for line in out.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "(no output)"


def read_pytest(out: str, returncode: int) -> tuple[bool, str]:
    """ok only when every CUDA case ran and passed: on CUDA a skip means the check did not happen."""
    summary = _last_line(out).strip("= ")
    counts = {k: int(n) for n, k in re.findall(r"(\d+) (passed|failed|skipped|error|errors)", summary)}
    ok = returncode == 0 and counts.get("passed") == CUDA_TEST_CASES and len(counts) == 1
    return ok, summary if ok else f"{summary} (expected {CUDA_TEST_CASES} passed)"


# probes: the measurements that run inside a step's subprocess ---------------------------------------------------
def probe_train() -> dict[str, Any]:
    from benchmarks import train_speed

    peak = measured_cuda_matmul_flops()
    torch.cuda.reset_peak_memory_stats()
    with tempfile.TemporaryDirectory() as tmp:
        r = train_speed.measure(TRAIN["preset"], TRAIN["steps"], TRAIN["precision"], TRAIN["batch_size"], Path(tmp),
                                "cuda", compile=TRAIN["compile"], peak_flops=peak)  # fmt: skip
    seq_len = r["tokens_seen"] // r["steps"] // TRAIN["batch_size"]
    result = (f"{r['tokens_per_s']:,.0f} tokens/s, MFU {r['mfu']:.1%} of a measured bf16 matmul peak of "
              f"{peak / 1e12:,.0f} TFLOP/s; batch {TRAIN['batch_size']} x {seq_len:,}, {r['steps']} steps, "
              f"final train loss {r['train_loss']:.3f}")  # fmt: skip
    ok = math.isfinite(r["train_loss"]) and 0 < r["mfu"] < 1
    return {"ok": ok, "result": result, "peak_gib": torch.cuda.max_memory_allocated() / 2**30}


def measured_cuda_matmul_flops(size: int = 8192, seconds: float = 1.0) -> float:
    """Dense bf16 matmul FLOP/s on the current CUDA device: the MFU denominator."""
    a, b = (torch.randn(size, size, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    a @ b
    torch.cuda.synchronize()
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        n += 1
    torch.cuda.synchronize()
    return 2 * size**3 * n / (time.perf_counter() - start)


def probe_prefill() -> dict[str, Any]:
    from benchmarks import throughput
    from workbench.model import build_model

    device = torch.device("cuda")
    cfg = throughput.benchmark_config(PREFILL["preset"], PREFILL["context"], PREFILL["window"])
    cfg = cfg.replace(layer_pattern="5:1")
    torch.manual_seed(0)
    model = build_model(cfg).to(device)
    ids = torch.randint(0, cfg.vocab_size, (1, PREFILL["context"]), device=device)
    runners = {path: throughput._in_path(throughput._ours(model), path) for path in ("flex", "dense")}
    r = throughput.measure(runners, ids, 1, PREFILL["warmup"], PREFILL["repeats"], phases=("prefill",))
    flex, dense = r["flex"]["prefill"], r["dense"]["prefill"]
    with torch.no_grad():  # the two paths must compute the same logits for the speed ratio to mean anything
        logits = {path: runner["logits"](ids) for path, runner in runners.items()}
    diff = (logits["flex"] - logits["dense"]).abs().max().item()
    result = (f"flex {flex['tokens_per_s']:,.0f} tok/s vs dense mask {dense['tokens_per_s']:,.0f} tok/s: "
              f"{flex['tokens_per_s'] / dense['tokens_per_s']:.2f}x; peak MiB flex {flex['peak_mb']:,.0f}, dense "
              f"{dense['peak_mb']:,.0f}; max logit difference {diff:.1e}; median of {PREFILL['repeats']}, "
              "fp32")  # fmt: skip
    ok = torch.allclose(logits["flex"], logits["dense"], atol=1e-3, rtol=1e-3)
    return {"ok": ok, "result": result, "peak_gib": max(flex["peak_mb"], dense["peak_mb"]) / 1024}


def probe_kv_cache() -> dict[str, Any]:
    from workbench.accounting import kv_cache_bytes
    from workbench.model import build_model
    from workbench.presets import get_preset

    parts, ok, peak = [], True, 0
    for preset, context in KV:
        cfg = get_preset(preset)
        with torch.device("meta"):
            model = build_model(cfg)
        model.embed.to_empty(device="cuda")  # the cache takes its device from the embedding
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        cache = model.new_cache(1, context, dtype=torch.bfloat16)
        torch.cuda.synchronize()
        measured, computed = torch.cuda.memory_allocated() - before, kv_cache_bytes(cfg, context, 1, "bfloat16")
        ok &= measured == computed == cache.nbytes
        peak = max(peak, measured)
        parts.append(f"{preset} @{context:,}: measured {measured:,} {'==' if measured == computed else '!='} "
                     f"computed {computed:,} B")  # fmt: skip
        del model, cache
        torch.cuda.empty_cache()
    return {"ok": ok, "result": "; ".join(parts) + " (bf16, batch 1)", "peak_gib": peak / 2**30}


def _pilot(args: argparse.Namespace, parser: argparse.ArgumentParser) -> Pilot:
    if len(args.pilot_arms) < 2 or len(set(args.pilot_arms)) < len(args.pilot_arms):
        parser.error(f"--pilot-arms: got {args.pilot_arms}; allowed: two or more distinct arms of the grid, the "
                     "baseline first")  # fmt: skip
    if args.pilot_seeds < 2:
        parser.error(f"--pilot-seeds: got {args.pilot_seeds}; allowed: 2 or more (a seed SD needs two)")
    return Pilot(tuple(args.pilot_arms), args.pilot_seeds, args.pilot_dir, overrides=tuple(args.pilot_set))


def main(argv: list[str] | None = None) -> int:
    default = PILOT
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu_check", description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="gpu_check.md", help="the markdown table's file")
    parser.add_argument("--dry", action="store_true", help="print the plan (steps, commands, budgets) and exit 0")
    parser.add_argument("--step", nargs="+", choices=STEP_KEYS, help="run only these steps (default: all)")
    parser.add_argument("--probe", choices=PROBES, help="run one step's measurement here and print it as JSON")
    # fmt: off
    parser.add_argument("--pilot-arms", nargs="+", default=list(default.arms), metavar="ARM",
                        help="the pilot's arms of local_global_ratio, the baseline first (default: %(default)s)")
    parser.add_argument("--pilot-seeds", type=int, default=default.seeds, help="seeds per arm (default: %(default)s)")
    parser.add_argument("--pilot-dir", default=default.sweep_dir,
                        help="the pilot's sweep dir, from the repository root (default: %(default)s)")
    parser.add_argument("--pilot-set", nargs="+", default=[], metavar="KEY=VALUE",
                        help="more overrides of the pilot's training command (e.g. trainer.max_steps=600)")
    # fmt: on
    args = parser.parse_args(argv)
    pilot = _pilot(args, parser)
    chosen = tuple(s for s in steps(pilot) if args.step is None or s.key in args.step)
    if args.dry:
        print(plan(chosen))
        return 0
    if not torch.cuda.is_available():
        print("error: no CUDA device is visible; benchmarks.gpu_check runs on one (--dry prints the plan)",
              file=sys.stderr)  # fmt: skip
        return 2
    if args.probe:
        if args.probe == "pilot":
            report = ratio_pilot.report(pilot, ROOT)
        else:
            report = {"train": probe_train, "prefill": probe_prefill, "kv_cache": probe_kv_cache}[args.probe]()
        print(MARK + json.dumps(report))
        return 0
    results = []
    for i, step in enumerate(chosen, 1):
        print(f"[{i}/{len(chosen)}] {step.name} (budget {step.budget_s} s): $ {step.command}", file=sys.stderr)
        results.append(run_step(step))
    table = markdown_table(f"{torch.cuda.get_device_name()}, CUDA {torch.version.cuda}", results)
    print(table)
    Path(args.out).write_text(table)
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
