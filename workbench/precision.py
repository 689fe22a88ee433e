"""`trainer.precision: auto`: bf16-mixed where the device computes bf16 natively, else 32-true.

Emulated bf16 is a trap: on a CPU without bf16 instructions autocast runs several times slower than fp32, and on
a pre-Ampere GPU torch emulates it too. So the check is for the instructions, not for what merely runs: CUDA
compute capability >= 8 (`is_bf16_supported(including_emulation=False)`); on a CPU `torch.cpu.get_capabilities()`
(public API in torch 2.13) listing AVX512-BF16 or AMX-BF16 (x86) or the BF16 extension (Arm), and torch built with
oneDNN, whose bf16 kernels use them. oneDNN's own `torch.ops.mkldnn._is_mkldnn_bf16_supported()` is not used: it
is true on any AVX512 CPU, where oneDNN emulates bf16.
"""

from __future__ import annotations

import torch

AUTO = "auto"
# instruction sets with native bf16 arithmetic, as torch.cpu.get_capabilities() names them
CPU_BF16_FEATURES = ("amx_bf16", "avx512_bf16", "bf16", "sve_bf16")


def resolve_precision(requested: str, accelerator: str) -> tuple[str, str]:
    """(Lightning precision string, why) for `trainer.precision` on `trainer.accelerator`; non-`auto` as is."""
    if requested != AUTO:
        return requested, "explicit"
    device = device_type(accelerator)
    if device == "cuda":
        if not torch.cuda.is_available():
            return "32-true", "auto: no CUDA device is visible"
        name = torch.cuda.get_device_name()
        major, minor = torch.cuda.get_device_capability()
        if torch.cuda.is_bf16_supported(including_emulation=False):
            return "bf16-mixed", f"auto: {name} (compute capability {major}.{minor}) computes bf16 natively"
        return "32-true", f"auto: {name} (compute capability {major}.{minor} < 8.0) would emulate bf16"
    if device == "cpu":
        caps = torch.cpu.get_capabilities()
        features = [f for f in CPU_BF16_FEATURES if caps.get(f)]
        if not features:
            return "32-true", "auto: this CPU has no bf16 instructions (avx512_bf16, amx_bf16), bf16 would be emulated"
        if not torch.backends.mkldnn.is_available():
            return "32-true", f"auto: the CPU has {', '.join(features)} but torch is built without oneDNN"
        return "bf16-mixed", f"auto: the CPU has {', '.join(features)} (native bf16 through oneDNN)"
    return "32-true", f"auto: no native-bf16 check for accelerator {device!r}"


def device_type(accelerator: str) -> str:
    """The device Lightning picks for `accelerator` (`auto`: CUDA, then MPS, then CPU; `gpu`: CUDA, then MPS)."""
    if accelerator not in (AUTO, "gpu"):
        return accelerator
    if torch.cuda.is_available():
        return "cuda"
    if torch.backends.mps.is_available():
        return "mps"
    return "cpu" if accelerator == AUTO else "gpu"
