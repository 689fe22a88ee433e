"""The peak FLOP/s that MFU divides by, and where it came from (results.json's `peak_flops`, `peak_flops_source`).

A GPU's peak is its datasheet's dense tensor-core rate for the compute dtype, looked up by device name (NVIDIA's
product briefs; the sparse "with sparsity" figures are twice these and never reached by a dense matmul). A CPU has
no datasheet figure torch can read, so its peak is measured: the best of several dense matmuls at the run's thread
count, measured once per machine (CPU model, cores, threads, device, dtype, torch) and cached on disk like the dry
run's throughput calibration (`workbench.timing`). Measuring in every run made MFU follow the machine's load: two
identical runs recorded peaks of 96.9 and 140.9 GFLOP/s. A GPU the table lacks gets Lightning's table, then a
measured (cached) rate.
"""

from __future__ import annotations

import datetime
import json
import re
import time
from pathlib import Path

import torch
from lightning.fabric.utilities.throughput import get_available_flops

from workbench.timing import CACHE as THROUGHPUT_CACHE
from workbench.timing import machine_key

CACHE = THROUGHPUT_CACHE.with_name("peak_flops.json")
TERA = 1e12
# (name pattern, dense peak TFLOP/s by dtype name), first match wins: NVL and PCIe parts before their SXM namesakes.
# H100 SXM / H200: NVIDIA H100 and H200 product briefs; A100: A100 datasheet (SXM and PCIe alike);
# L4, L40S, V100 (PCIe, SXM2), T4: their datasheets (V100 and T4 have no bf16 units).
DATASHEET: tuple[tuple[str, dict[str, float]], ...] = (
    (r"H100.*PCIe", {"fp64": 51.2, "fp32": 51.2, "tf32": 378.0, "bf16": 756.0, "fp16": 756.0}),
    (r"H100.*NVL|H200.*NVL", {}),  # no single-GPU dense figure in the briefs: Lightning's table, then measured
    (r"H100|H200|GH200", {"fp64": 67.0, "fp32": 67.0, "tf32": 494.7, "bf16": 989.4, "fp16": 989.4}),
    (r"A100", {"fp64": 19.5, "fp32": 19.5, "tf32": 156.0, "bf16": 312.0, "fp16": 312.0}),
    (r"L40S", {"fp32": 91.6, "tf32": 183.0, "bf16": 362.05, "fp16": 362.05}),
    (r"\bL4\b", {"fp32": 30.3, "tf32": 60.0, "bf16": 121.0, "fp16": 121.0}),
    (r"V100.*PCIE", {"fp64": 7.0, "fp32": 14.0, "fp16": 112.0}),
    (r"V100", {"fp64": 7.8, "fp32": 15.7, "fp16": 125.0}),
    (r"\bT4\b", {"fp32": 8.1, "fp16": 65.0}),
)  # fmt: skip
DTYPE_NAMES = {torch.float64: "fp64", torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}


def compute_dtype(precision: str) -> torch.dtype:
    """The dtype the matmuls run in under a Lightning precision string (autocast's dtype for `-mixed`)."""
    if "bf16" in precision:
        return torch.bfloat16
    if precision.startswith("16"):
        return torch.float16
    return torch.float64 if precision.startswith("64") else torch.float32


def dtype_name(dtype: torch.dtype, device: torch.device) -> str:
    """fp32 on CUDA is tf32 when torch lets matmuls use it (`torch.set_float32_matmul_precision`)."""
    tf32 = device.type == "cuda" and dtype == torch.float32 and torch.get_float32_matmul_precision() != "highest"
    return "tf32" if tf32 else DTYPE_NAMES[dtype]


def datasheet_flops(device_name: str, dtype: str) -> float | None:
    """Dense peak FLOP/s of the first table row whose pattern the device name matches, None if none or no dtype."""
    for pattern, peaks in DATASHEET:
        if re.search(pattern, device_name, re.IGNORECASE):
            return peaks[dtype] * TERA if dtype in peaks else None
    return None


def measure_matmul_flops(device: torch.device, dtype: torch.dtype, size: int = 1024, trials: int = 5,
                         seconds: float = 0.1) -> float:  # fmt: skip
    """The best of `trials` dense `size`^3 matmul rates (FLOP/s), each over `seconds`: the best, not the mean, so that
    other work on the machine lowers it less."""
    a, b = (torch.randn(size, size, dtype=dtype, device=device) for _ in range(2))
    a @ b  # warm up: thread pools, kernel choice
    best = 0.0
    for _ in range(trials):
        _sync(device)
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            a @ b
            n += 1
        _sync(device)
        best = max(best, 2 * size**3 * n / (time.perf_counter() - t0))
    return best


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def cached_matmul_flops(device: torch.device, dtype: torch.dtype, cache: Path | None = None) -> tuple[float, str]:
    """(FLOP/s, source): this machine's measured matmul peak, from `cache` (default `CACHE`) or measured now (about
    0.6 s, once)."""
    cache = cache or CACHE
    key = machine_key(device.type, DTYPE_NAMES[dtype])
    known = json.loads(cache.read_text()) if cache.is_file() else {}
    if key not in known:
        date = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
        known[key] = {"flops": measure_matmul_flops(device, dtype), "measured": date}
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(".tmp")
        tmp.write_text(json.dumps(known, indent=2))
        tmp.replace(cache)  # a reader never sees half a file
    entry = known[key]
    return entry["flops"], f"measured {entry['measured']} ({key}), cached {cache}"


def peak_flops(device: torch.device, precision: str, override: float | None = None,
               cache: Path | None = None) -> tuple[float, str]:  # fmt: skip
    """(FLOP/s, source) of one device under `precision`: `override` (trainer.peak_flops) if given; on CUDA the
    datasheet's dense peak, else Lightning's table; else a measured, cached matmul rate."""
    if override:
        return float(override), "trainer.peak_flops"
    dtype = compute_dtype(precision)
    if device.type == "cuda":
        name, kind = torch.cuda.get_device_name(device), dtype_name(dtype, device)
        if (flops := datasheet_flops(name, kind)) is not None:
            return flops, f"datasheet {name} {kind} dense"
        if (flops := get_available_flops(device, dtype)) is not None:
            return float(flops), f"Lightning's table {name} {kind}"
    return cached_matmul_flops(device, dtype, cache)
