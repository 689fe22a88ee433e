"""How fast this machine trains: one optimiser step in plain torch and its time (what the benchmarks and the dry run
share) and the training FLOP/s of a reference step (the dry run's time estimate, measured once per machine and
cached). MFU's peak, cached the same way, is `workbench.peak`'s.

No Lightning here: the dry run prices a grid before anything trains, and the benchmarks time the step alone.
`precision` takes Lightning's strings: `-mixed` autocasts to that dtype, `-true` expects the parameters in it
(`time_train_steps` casts them), `auto` resolves as the Trainer would (`workbench.precision`).
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from workbench.accounting import training_flops
from workbench.config import ModelConfig
from workbench.model import build_model
from workbench.precision import resolve_precision
from workbench.presets import PRESETS

# precision -> (parameter dtype, autocast dtype or None)
PRECISIONS: dict[str, tuple[torch.dtype, torch.dtype | None]] = {
    "32-true": (torch.float32, None), "bf16-mixed": (torch.float32, torch.bfloat16),
    "16-mixed": (torch.float32, torch.float16), "bf16-true": (torch.bfloat16, None),
    "16-true": (torch.float16, None), "64-true": (torch.float64, None),
}  # fmt: skip

LossFn = Callable[[Callable[[torch.Tensor], torch.Tensor], torch.Tensor], torch.Tensor]


def _dtypes(precision: str) -> tuple[torch.dtype, torch.dtype | None]:
    if precision not in PRECISIONS:
        raise ValueError(f"precision: got {precision!r}; allowed here: {', '.join(PRECISIONS)}")
    return PRECISIONS[precision]


def next_token_loss(model: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the logits at each position of `x` against the next token (the last position has none)."""
    logits = model(x)
    return F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), x[:, 1:].flatten())


def train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    precision: str = "32-true",
    loss_fn: LossFn = next_token_loss,
    clip_norm: float | None = None,
) -> torch.Tensor:
    """Forward under `precision`, backward, optional gradient-norm clip, optimiser step; returns the loss."""
    autocast = _dtypes(precision)[1]
    with torch.autocast(x.device.type, dtype=autocast, enabled=autocast is not None):
        loss = loss_fn(model, x)
    loss.backward()
    if clip_norm is not None:
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip_norm)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss.detach()


def time_train_steps(
    model_cfg: ModelConfig,
    batch_size: int,
    seq_len: int,
    precision: str,
    steps: int = 2,
    warmup: int = 1,
    device: str | torch.device = "cpu",
) -> float:
    """Mean seconds per `train_step` (AdamW) of a fresh model on random tokens, after `warmup` untimed steps
    (the first allocates the optimiser state and, on CUDA, picks kernels)."""
    if steps < 1 or warmup < 0:
        raise ValueError(f"steps, warmup: got {steps}, {warmup}; allowed: steps >= 1, warmup >= 0")
    device = torch.device(device)
    precision = resolve_precision(precision, device.type)[0]
    model = build_model(model_cfg).to(device, _dtypes(precision)[0])
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randint(0, model_cfg.vocab_size, (batch_size, seq_len), device=device)
    for _ in range(warmup):
        train_step(model, optimizer, x, precision)
    _sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        train_step(model, optimizer, x, precision)
    _sync(device)
    return (time.perf_counter() - start) / steps


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


REFERENCE = {"preset": "tiny", "batch_size": 4, "seq_len": 128}
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "workbench" / "throughput.json"


def machine_key(device: str, precision: str) -> str:
    cpu = platform.processor() or platform.machine()
    if Path("/proc/cpuinfo").is_file():
        names = [ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                 if ln.startswith("model name")]  # fmt: skip
        cpu = names[0] if names else cpu
    if device == "cuda":
        cpu = torch.cuda.get_device_name()
    threads = torch.get_num_threads()
    return f"{cpu} | {os.cpu_count()} CPUs | {threads} threads | {device} | {precision} | torch {torch.__version__}"


def achieved_flops(device: str, precision: str, cache: Path = CACHE) -> tuple[float, str]:
    """Training FLOP/s on the reference step here, from the cache or measured now (a few seconds, once)."""
    key = machine_key(device, precision)
    known = json.loads(cache.read_text()) if cache.is_file() else {}
    if key not in known:
        model = PRESETS[REFERENCE["preset"]]
        seconds = time_train_steps(model, REFERENCE["batch_size"], REFERENCE["seq_len"], precision, steps=3, warmup=1,
                                   device=device)  # fmt: skip
        known[key] = REFERENCE["batch_size"] * training_flops(model, REFERENCE["seq_len"]) / seconds
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps(known, indent=2))
    return known[key], key
