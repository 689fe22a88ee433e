"""MFU's peak: the datasheet's dense figure by device name, and a measured CPU rate cached so that it repeats."""

import json

import pytest
import torch

from workbench import peak

# (torch.cuda.get_device_name() as these parts report it, dtype, the product brief's dense figure in TFLOP/s)
DATASHEET = [
    ("NVIDIA H100 80GB HBM3", "bf16", 989.4),
    ("NVIDIA H100 80GB HBM3", "tf32", 494.7),
    ("NVIDIA H100 PCIe", "bf16", 756.0),
    ("NVIDIA H200", "bf16", 989.4),
    ("NVIDIA A100-SXM4-80GB", "tf32", 156.0),
    ("NVIDIA A100 80GB PCIe", "fp16", 312.0),
    ("NVIDIA L4", "bf16", 121.0),
    ("NVIDIA L40S", "bf16", 362.05),
    ("Tesla V100-PCIE-16GB", "fp16", 112.0),
    ("Tesla V100-SXM2-16GB", "fp32", 15.7),
    ("Tesla T4", "fp16", 65.0),
]


@pytest.mark.parametrize(("name", "dtype", "tflops"), DATASHEET)
def test_datasheet_peak_by_device_name(name, dtype, tflops):
    assert peak.datasheet_flops(name, dtype) == tflops * 1e12


@pytest.mark.parametrize(("name", "dtype"), [("NVIDIA H100 NVL", "bf16"), ("NVIDIA H200 NVL", "bf16"),
                                             ("Tesla T4", "bf16"), ("NVIDIA GeForce RTX 4090", "bf16")])  # fmt: skip
def test_no_datasheet_peak_where_the_table_has_none(name, dtype):
    """NVL parts and consumer cards fall through to Lightning's table or a measurement; T4 has no bf16 units."""
    assert peak.datasheet_flops(name, dtype) is None


@pytest.mark.parametrize(
    ("precision", "dtype"),
    [("32-true", torch.float32), ("bf16-mixed", torch.bfloat16), ("bf16-true", torch.bfloat16),
     ("16-mixed", torch.float16), ("16-true", torch.float16), ("64-true", torch.float64)],
)  # fmt: skip
def test_compute_dtype_of_each_precision(precision, dtype):
    assert peak.compute_dtype(precision) == dtype


def test_cpu_peak_is_measured_once_then_read_from_the_cache(tmp_path, monkeypatch):
    cache = tmp_path / "peak_flops.json"
    first, source = peak.peak_flops(torch.device("cpu"), "32-true", cache=cache)
    assert first > 0 and source.startswith("measured ") and str(cache) in source
    monkeypatch.setattr(peak, "measure_matmul_flops", lambda *a, **k: pytest.fail("measured again"))
    assert peak.peak_flops(torch.device("cpu"), "32-true", cache=cache) == (first, source)
    (entry,) = json.loads(cache.read_text()).values()
    assert entry["flops"] == first and f"{torch.get_num_threads()} threads" in source


def test_an_explicit_peak_wins(tmp_path):
    assert peak.peak_flops(torch.device("cpu"), "32-true", 1e11, cache=tmp_path / "x.json") == (
        1e11,
        "trainer.peak_flops",
    )
    assert not (tmp_path / "x.json").exists()
