import pytest
import torch

from benchmarks import train_speed
from workbench.accounting import param_counts
from workbench.presets import get_preset


def test_quick_run_reports_tokens_per_second_and_mfu(capsys):
    """The code path the GPU benchmark takes, on CPU at smoke size: real steps, a row per preset."""
    (r,) = train_speed.main(["--presets", "tiny", "--quick", "--device", "cpu", "--precision", "32-true"])
    out = capsys.readouterr().out
    assert "$ python -m benchmarks.train_speed --presets tiny --quick --device cpu" in out
    assert "device cpu" in out and f"MFU against {r['peak_flops_source']}" in out
    assert r["peak_flops_source"].startswith("measured ")
    q = train_speed.QUICK
    assert (r["steps"], r["precision"], r["params"]) == (q["steps"], "32-true", param_counts(get_preset("tiny")))
    tokens_per_step = q["batch_size"] * q["seq_len"]
    assert r["tokens_seen"] == q["steps"] * tokens_per_step
    # MFU is the achieved FLOP rate over the peak: the measured FLOPs per batch at the reported tokens/s
    assert r["mfu"] == pytest.approx(r["flops_per_batch"] * r["tokens_per_s"] / tokens_per_step / r["peak_flops"])
    assert 0 < r["mfu"] < 1
    row = next(line.split() for line in out.splitlines() if line.startswith("tiny "))
    assert row[2:5] == [str(tokens_per_step), f"{r['tokens_per_s']:,.0f}", f"{r['mfu']:.1%}"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown where no CUDA device exists")
def test_cuda_without_a_gpu_fails_before_any_run():
    with pytest.raises(ValueError, match=r"--device: got 'cuda'; allowed here: auto, cpu"):
        train_speed.main(["--presets", "base125m", "--device", "cuda"])
