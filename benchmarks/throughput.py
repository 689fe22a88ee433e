"""Throughput of our model against `transformers`' Gemma3ForCausalLM with the same config and weights.

Measures tokens/s for a train step (forward + backward + AdamW step), prefill (one pass filling a fresh KV cache)
and decode (one token per step after a prefill of `--context` tokens), median over `--steps` timed repeats after
`--warmup` untimed ones, and the peak memory of one more call: bytes allocated by torch above the level at its
start (CUDA: `max_memory_allocated`; CPU: the running sum of the profiler's allocation events), so it counts
tensors (activations, gradients, optimiser state, caches), not the allocator's or the process's overhead.
Then our attention paths on the same model (`attention_path`: auto dispatch, dense mask, flex on CUDA), and the
prefill cost of a 5:1 model with a 1024 window as the context grows, beside the analytic FLOPs per token.
`--context` and `--window` set the compared model's sequence length and local window (default: the preset's), e.g.
`--batch 1 --context 4096 --window 1024`: the long-context 5:1 setting where our local layers attend over O(T * W)
pairs and the reference's sdpa path over a dense T x T masked score matrix. `--sections` runs a subset.
Usage: `python -m benchmarks.throughput [--preset small] [--batch 4] [--context 512] [--window 128] [--steps 5]
[--threads 2] [--sections reference paths scaling] [--json] [--quick]`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import torch
import transformers
from tabulate import tabulate
from torch import nn
from torch.profiler import ProfilerActivity, profile

from workbench.accounting import forward_flops, kv_bytes_read_per_token
from workbench.blocks.attention import attention_path
from workbench.config import ModelConfig
from workbench.interop import to_hf
from workbench.model import Transformer, build_model
from workbench.presets import get_preset, list_presets
from workbench.timing import next_token_loss, train_step

PHASES = ("train", "prefill", "decode")
SECTIONS = ("reference", "paths", "scaling")
SWEEP = (1024, 2048, 4096, 8192, 16384)
QUICK = dict(preset="tiny", batch=2, context=128, steps=2, warmup=1, new_tokens=4, sweep=[64, 128, 256],
             sweep_window=32)  # fmt: skip


# model adapters: ours and the reference behind one interface --------------------------------------------------
def _ours(model: Transformer) -> dict[str, Callable]:
    def prefill(ids: torch.Tensor, extra: int) -> tuple[torch.Tensor, Any]:
        cache = model.new_cache(ids.shape[0], ids.shape[1] + extra)
        return model(ids, cache), cache

    return {"model": model, "logits": model, "prefill": prefill, "decode": lambda ids, cache: model(ids, cache)}


def _reference(model: nn.Module) -> dict[str, Callable]:
    def prefill(ids: torch.Tensor, extra: int) -> tuple[torch.Tensor, Any]:
        out = model(input_ids=ids, use_cache=True)
        return out.logits, out.cache

    def decode(ids: torch.Tensor, cache: Any) -> torch.Tensor:
        return model(input_ids=ids, cache=cache, use_cache=True).logits

    return {"model": model, "logits": lambda ids: model(input_ids=ids, use_cache=False).logits, "prefill": prefill,
            "decode": decode}  # fmt: skip


# timing and memory ---------------------------------------------------------------------------------------------
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def median_seconds(setups: Mapping[str, Callable[[], Callable[[], Any]]], warmup: int, repeats: int,
                   device: torch.device) -> dict[str, tuple[float, float]]:  # fmt: skip
    """Median (wall, CPU) seconds of the closure each `setup()` returns; setups (e.g. the prefill before decode)
    are not timed. The closures take turns within each repeat, so a shared machine's changing load falls on all
    alike; with one thread on CPU, CPU time is the load-robust measure (on CUDA it means nothing)."""
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in setups}
    for i in range(warmup + repeats):
        for name, setup in setups.items():
            fn = setup()
            _sync(device)
            wall, cpu = time.perf_counter(), time.process_time()
            fn()
            _sync(device)
            if i >= warmup:
                times[name].append((time.perf_counter() - wall, time.process_time() - cpu))
    medians = {}
    for name, ts in times.items():
        medians[name] = (statistics.median(wall for wall, _ in ts), statistics.median(cpu for _, cpu in ts))
    return medians


def peak_bytes(setup: Callable[[], Callable[[], Any]], device: torch.device) -> int:
    """Peak torch allocation during one call, above the level at its start."""
    fn = setup()
    if device.type == "cuda":
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        fn()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - base
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    # "[memory]" events carry +bytes per allocation and -bytes per free, in time order once sorted
    events = sorted(
        (e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"), key=lambda e: e.start_ns()
    )
    level = peak = 0
    for e in events:
        level += e.nbytes()
        peak = max(peak, level)
    return peak


# the three phases ----------------------------------------------------------------------------------------------
def _phase_setups(runner: dict[str, Callable], ids: torch.Tensor, new_tokens: int) -> dict[str, Callable]:
    """A setup per phase returning the closure to time; tokens per call: B*T for train/prefill, B*new for decode."""
    model = runner["model"]
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)

    def train() -> Callable[[], Any]:
        model.train()
        return lambda: train_step(model, opt, ids, loss_fn=lambda _, x: next_token_loss(runner["logits"], x))

    def prefill() -> Callable[[], Any]:
        model.eval()
        return lambda: _no_grad(runner["prefill"], ids, new_tokens)

    def decode() -> Callable[[], None]:
        model.eval()
        logits, cache = _no_grad(runner["prefill"], ids, new_tokens)
        token = logits[:, -1:].argmax(-1)

        def steps() -> None:
            nonlocal token
            for _ in range(new_tokens):
                token = _no_grad(runner["decode"], token, cache)[:, -1:].argmax(-1)

        return steps

    return {"train": train, "prefill": prefill, "decode": decode}


def _no_grad(fn: Callable, *args: Any) -> Any:
    with torch.no_grad():
        return fn(*args)


def measure(runners: Mapping[str, dict[str, Callable]], ids: torch.Tensor, new_tokens: int, warmup: int,
            repeats: int, phases: tuple[str, ...] = PHASES) -> dict[str, dict[str, dict[str, float]]]:  # fmt: skip
    """tokens/s (wall and CPU time) and peak MB of each phase for each model, timed in turns."""
    setups = {name: _phase_setups(runner, ids, new_tokens) for name, runner in runners.items()}
    out: dict[str, dict[str, dict[str, float]]] = {name: {} for name in runners}
    for phase in phases:
        tokens = ids.shape[0] * (new_tokens if phase == "decode" else ids.shape[1])
        seconds = median_seconds({name: s[phase] for name, s in setups.items()}, warmup, repeats, ids.device)
        for name, (wall, cpu) in seconds.items():
            out[name][phase] = {"tokens_per_s": tokens / wall, "cpu_tokens_per_s": tokens / cpu,
                                "peak_mb": peak_bytes(setups[name][phase], ids.device) / 2**20}  # fmt: skip
    return out


def _in_path(runner: dict[str, Callable], path: str) -> dict[str, Callable]:
    """The runner with every model call made under `attention_path(path)`."""

    def wrap(fn: Callable) -> Callable:
        def call(*args: Any) -> Any:
            with attention_path(path):
                return fn(*args)

        return call

    return {key: fn if key == "model" else wrap(fn) for key, fn in runner.items()}


def compare_reference(cfg: ModelConfig, batch: int, context: int, new_tokens: int, warmup: int, repeats: int,
                      device: torch.device, reference_attn: str = "sdpa") -> dict[str, Any]:  # fmt: skip
    """Ours and the reference (same config and weights) on each phase, with ratios ours / reference."""
    torch.manual_seed(0)
    ours = build_model(cfg).to(device)
    reference = to_hf(ours, attn_implementation=reference_attn)
    ids = torch.randint(0, cfg.vocab_size, (batch, context), device=device)
    results = measure({"ours": _ours(ours), "reference": _reference(reference)}, ids, new_tokens, warmup, repeats)
    ours_, ref = results["ours"], results["reference"]
    # decode reads each cached token's keys and values once per new token: that, not FLOPs, bounds decoding
    mid = context + new_tokens // 2  # the mean context over the timed decode steps
    read = kv_bytes_read_per_token(cfg, mid, str(next(ours.parameters()).dtype).removeprefix("torch."))
    for r in (ours_, ref):
        r["decode"]["kv_bytes_read_per_token"] = read
        r["decode"]["kv_gb_per_s"] = read * r["decode"]["tokens_per_s"] / 1e9
    return {phase: {"ours": ours_[phase], "reference": ref[phase],
                    "ratio": ours_[phase]["tokens_per_s"] / ref[phase]["tokens_per_s"],
                    "cpu_ratio": ours_[phase]["cpu_tokens_per_s"] / ref[phase]["cpu_tokens_per_s"]}
            for phase in PHASES}  # fmt: skip


def compare_paths(cfg: ModelConfig, batch: int, context: int, warmup: int, repeats: int,
                  device: torch.device) -> dict[str, Any]:  # fmt: skip
    """Train step and prefill of our model under each attention path; flex only where it is compiled (CUDA)."""
    torch.manual_seed(0)
    model = build_model(cfg).to(device)
    ids = torch.randint(0, cfg.vocab_size, (batch, context), device=device)
    paths = ("auto", "dense", "flex") if device.type == "cuda" else ("auto", "dense")
    out: dict[str, Any] = measure({path: _in_path(_ours(model), path) for path in paths}, ids, 1, warmup, repeats,
                                  phases=("train", "prefill"))  # fmt: skip
    if device.type != "cuda":
        out["flex"] = "unavailable (flex_attention is only compiled on CUDA; on CPU it runs as an eager reference)"
    return out


def context_scaling(cfg: ModelConfig, contexts: list[int], window: int, warmup: int, repeats: int,
                    device: torch.device) -> list[dict[str, float]]:  # fmt: skip
    """Prefill tokens/s of a 5:1 model with `window` at each context (batch 1), and analytic FLOPs per token."""
    cfg = cfg.replace(layer_pattern="5:1", window=window, max_seq_len=max(contexts))
    torch.manual_seed(0)
    runner = _ours(build_model(cfg).to(device))
    rows = []
    for context in contexts:
        ids = torch.randint(0, cfg.vocab_size, (1, context), device=device)
        wall, cpu = median_seconds({"ours": _phase_setups(runner, ids, 0)["prefill"]}, warmup, repeats, device)["ours"]
        rows.append({"context": context, "tokens_per_s": context / wall, "cpu_tokens_per_s": context / cpu,
                     "flops_per_token": forward_flops(cfg, context) / context})  # fmt: skip
    return rows


# command line --------------------------------------------------------------------------------------------------
def benchmark_config(preset: str, context: int | None, window: int | None) -> ModelConfig:
    """The preset with the compared sequence length and local window; max_seq_len grows to the context (it sets
    no RoPE scaling on these presets, so the computation is the preset's)."""
    cfg = get_preset(preset)
    cfg = cfg.replace(window=window) if window is not None else cfg
    return cfg.replace(max_seq_len=max(cfg.max_seq_len, context)) if context is not None else cfg


def run(args: argparse.Namespace) -> dict[str, Any]:
    for name in ("batch", "context", "window", "steps", "new_tokens", "sweep_window"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise ValueError(f"{name}: got {getattr(args, name)}; allowed: an int >= 1")
    torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    cfg = benchmark_config(args.preset, args.context, args.window)
    context = args.context or cfg.max_seq_len
    warnings.filterwarnings("ignore", module="torch.nn.attention")  # flex's eager-mode notice
    out = {
        "preset": args.preset, "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "threads": args.threads, "load_average": os.getloadavg(), "torch": torch.__version__,
        "transformers": transformers.__version__, "batch": args.batch, "context": context,
        "layer_pattern": cfg.layer_pattern, "window": cfg.window, "steps": args.steps, "warmup": args.warmup,
        "new_tokens": args.new_tokens, "params": sum(p.numel() for p in build_model(cfg).parameters()),
    }  # fmt: skip
    if "reference" in args.sections:
        out["reference"] = compare_reference(cfg, args.batch, context, args.new_tokens, args.warmup, args.steps, device)
    if "paths" in args.sections:
        out["paths"] = compare_paths(cfg, args.batch, context, args.warmup, args.steps, device)
    if "scaling" in args.sections:
        rows = context_scaling(cfg, args.sweep, args.sweep_window, args.warmup, args.steps, device)
        out["scaling"] = {"window": args.sweep_window, "rows": rows}
    out["load_average_end"] = os.getloadavg()
    return out


def print_report(r: dict[str, Any]) -> None:
    print(
        f"{r['preset']} ({r['params'] / 1e6:.2f}M params, {r['layer_pattern']}, window {r['window']:,}), "
        f"batch {r['batch']} x context {r['context']:,}, device {r['device']}, {r['threads']} threads, "
        f"torch {r['torch']}, transformers {r['transformers']}, load average {r['load_average'][0]:.2f} at start, "
        f"{r['load_average_end'][0]:.2f} at end; median of {r['steps']} after {r['warmup']} warmup"
    )
    if "reference" in r:
        _print_reference(r["reference"], cpu=r["device"] == "cpu")
    if "paths" in r:
        _print_paths(r["paths"])
    if "scaling" in r:
        _print_scaling(r["scaling"], cpu=r["device"] == "cpu")


def _print_reference(reference: dict[str, Any], cpu: bool) -> None:
    print("\nours vs transformers Gemma3ForCausalLM (sdpa), same config and weights, timed in turns; tok/s by wall "
          f"time{'; ours/ref by CPU time too' if cpu else ''}; peak MB: torch tensor memory")  # fmt: skip
    rows = [[phase, f"{v['ours']['tokens_per_s']:,.0f}", f"{v['reference']['tokens_per_s']:,.0f}", f"{v['ratio']:.2f}x",
             *([f"{v['cpu_ratio']:.2f}x"] if cpu else []), f"{v['ours']['peak_mb']:,.1f}",
             f"{v['reference']['peak_mb']:,.1f}"]
            for phase, v in reference.items()]  # fmt: skip
    header = ["phase", "ours tok/s", "ref tok/s", "ours/ref", *(["ours/ref CPU"] if cpu else []), "ours peak MB",
              "ref peak MB"]  # fmt: skip
    print(tabulate(rows, header, intfmt=","))
    decode = reference["decode"]
    print(
        f"decode: {decode['ours']['kv_bytes_read_per_token']:,} KV bytes read per token (workbench.accounting."
        f"kv_bytes_read_per_token at the mean context); achieved KV bandwidth ours "
        f"{decode['ours']['kv_gb_per_s']:.2f} GB/s, reference {decode['reference']['kv_gb_per_s']:.2f} GB/s"
    )


def _print_paths(paths: dict[str, Any]) -> None:
    print("\nour attention paths (train step and prefill)")
    rows = [[path, *(f"{v[p]['tokens_per_s']:,.0f}" for p in ("train", "prefill")),
             *(f"{v[p]['peak_mb']:,.1f}" for p in ("train", "prefill"))]
            for path, v in paths.items() if not isinstance(v, str)]  # fmt: skip
    print(tabulate(rows, ["path", "train tok/s", "prefill tok/s", "train peak MB", "prefill peak MB"], intfmt=","))
    for path, v in paths.items():
        if isinstance(v, str):
            print(f"{path}: {v}")


def _print_scaling(s: dict[str, Any], cpu: bool) -> None:
    """Cost per token relative to the first context: by CPU time on CPU (one thread: robust to other jobs)."""
    key = "cpu_tokens_per_s" if cpu else "tokens_per_s"
    print(f"\nprefill vs context, 5:1 local:global, window {s['window']:,}, batch 1 (cost/token relative to the first"
          f"{', by CPU time' if cpu else ''})")  # fmt: skip
    first = s["rows"][0]
    rows = [[f"{row['context']:,}", f"{row['tokens_per_s']:,.0f}", *([f"{row[key]:,.0f}"] if cpu else []),
             f"{first[key] / row[key]:.2f}", f"{row['flops_per_token'] / 1e6:,.1f}",
             f"{row['flops_per_token'] / first['flops_per_token']:.2f}"]
            for row in s["rows"]]  # fmt: skip
    header = ["context", "tok/s", *(["CPU tok/s"] if cpu else []), "time/token", "MFLOP/token", "FLOP/token"]
    print(tabulate(rows, header, intfmt=","))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.throughput", description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="small", choices=list_presets())
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--context", type=int, default=None, help="tokens per sequence (default: max_seq_len)")
    parser.add_argument("--window", type=int, default=None, help="local window of the compared model (default: "
                        "the preset's)")  # fmt: skip
    parser.add_argument("--steps", type=int, default=5, help="timed repeats per measurement (median reported)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--new-tokens", type=int, default=32, help="decode steps per timed call")
    parser.add_argument("--sweep", type=int, nargs="+", default=list(SWEEP), help="contexts for the prefill sweep")
    parser.add_argument("--sweep-window", type=int, default=1024, help="local window of the prefill sweep's model")
    parser.add_argument("--sections", nargs="+", default=list(SECTIONS), choices=SECTIONS, help="what to measure")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help=f"small settings for tests: {QUICK}")
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    args = parser.parse_args(argv)
    if args.quick:
        vars(args).update(QUICK)
    result = run(args)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print_report(result)
    return result


if __name__ == "__main__":
    main()
