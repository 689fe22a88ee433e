import time

import pytest
import torch

from workbench import precision
from workbench.precision import resolve_precision


@pytest.fixture
def cpu(monkeypatch):
    """A CPU with the given capabilities and no CUDA or MPS device."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mkldnn, "is_available", lambda: True)

    def with_capabilities(**caps):
        monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: {"architecture": "x86_64", **caps})

    return with_capabilities


@pytest.fixture
def gpu(monkeypatch):
    """A visible CUDA device of the given compute capability."""

    def with_capability(major: int, minor: int = 0):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda *_: "Test GPU")
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *_: (major, minor))
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: major >= 8)

    return with_capability


@pytest.mark.parametrize("requested", ["32-true", "bf16-mixed", "16-mixed", "bf16-true"])
@pytest.mark.parametrize("accelerator", ["cpu", "cuda", "auto"])
def test_an_explicit_precision_wins(requested, accelerator):
    assert resolve_precision(requested, accelerator) == (requested, "explicit")


@pytest.mark.parametrize("feature", ["avx512_bf16", "amx_bf16"])
def test_auto_on_a_cpu_with_bf16_instructions_is_bf16_mixed(cpu, feature):
    cpu(avx2=True, avx512_f=True, **{feature: True})
    for accelerator in ("cpu", "auto"):
        value, why = resolve_precision("auto", accelerator)
        assert value == "bf16-mixed" and feature in why


def test_auto_on_an_avx2_or_plain_avx512_cpu_is_32_true(cpu):
    """AVX512 without BF16: oneDNN would still run bf16, emulated, which is slower than fp32."""
    for caps in ({"avx2": True}, {"avx2": True, "avx512_f": True, "avx512_bf16": False}):
        cpu(**caps)
        value, why = resolve_precision("auto", "auto")
        assert value == "32-true" and "emulated" in why


def test_auto_without_onednn_is_32_true(cpu, monkeypatch):
    cpu(avx512_bf16=True)
    monkeypatch.setattr(torch.backends.mkldnn, "is_available", lambda: False)
    value, why = resolve_precision("auto", "cpu")
    assert value == "32-true" and "without oneDNN" in why


@pytest.mark.parametrize(("major", "expected"), [(8, "bf16-mixed"), (9, "bf16-mixed"), (7, "32-true")])
@pytest.mark.parametrize("accelerator", ["cuda", "gpu", "auto"])
def test_auto_on_cuda_follows_native_bf16(gpu, cpu, major, expected, accelerator):
    cpu(avx512_bf16=True)  # the GPU decides, not the host CPU
    gpu(major)
    value, why = resolve_precision("auto", accelerator)
    assert value == expected and f"Test GPU (compute capability {major}.0" in why


def test_auto_asked_for_cuda_without_a_device_is_32_true(cpu):
    cpu(avx512_bf16=True)
    assert resolve_precision("auto", "cuda") == ("32-true", "auto: no CUDA device is visible")


def test_auto_on_other_accelerators_is_32_true(cpu, monkeypatch):
    cpu(avx512_bf16=True)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert resolve_precision("auto", "auto")[0] == "32-true"
    assert resolve_precision("auto", "tpu") == ("32-true", "auto: no native-bf16 check for accelerator 'tpu'")


@pytest.mark.benchmark  # wall-clock: off the default run (`pytest -m benchmark` runs it)
def test_the_real_cpu_answer_matches_its_bf16_speed():
    """What `auto` claims here, measured: native bf16 matmuls beat fp32 (5x on AVX512-BF16), emulated ones lose
    (several times slower on AVX2). fp32 and bf16 take turns, the fastest of 7 each, so load hits both alike."""
    value, why = resolve_precision("auto", "cpu")
    a32, b32 = torch.randn(512, 512), torch.randn(512, 512)
    a16, b16 = a32.bfloat16(), b32.bfloat16()
    best = {torch.float32: float("inf"), torch.bfloat16: float("inf")}
    for _ in range(7):
        for a, b in ((a32, b32), (a16, b16)):
            start = time.perf_counter()
            a @ b
            best[a.dtype] = min(best[a.dtype], time.perf_counter() - start)
    speedup = best[torch.float32] / best[torch.bfloat16]
    if value == "bf16-mixed":
        assert speedup > 1, f"{why}, but a bf16 matmul is {1 / speedup:.1f}x slower than fp32"
    else:
        assert value == "32-true" and speedup < 2, f"{why}, but a bf16 matmul is {speedup:.1f}x faster than fp32"


def test_cpu_features_are_the_ones_torch_reports():
    """The names looked up exist in torch's capability map on this architecture (a renamed key would read False)."""
    caps = torch.cpu.get_capabilities()
    known = {"x86_64": ("avx512_bf16", "amx_bf16"), "aarch64": ("bf16",)}.get(caps["architecture"], ())
    assert set(known) <= set(caps) and set(known) <= set(precision.CPU_BF16_FEATURES)
