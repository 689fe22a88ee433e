import pytest
import torch

from analysis import train_speed


def test_quick_run_reports_tokens_per_second_and_mfu(capsys):
    """The code path the GPU benchmark takes, on CPU at smoke size: real steps, a row per preset."""
    train_speed.main(["--presets", "tiny", "--quick", "--device", "cpu", "--precision", "32-true"])
    out = capsys.readouterr().out
    assert "$ python -m analysis.train_speed --presets tiny --quick --device cpu" in out
    assert "device cpu" in out and "MFU against a measured matmul peak" in out
    row = next(line.split() for line in out.splitlines() if line.startswith("tiny "))
    tokens_per_step = train_speed.QUICK["batch_size"] * train_speed.QUICK["seq_len"]
    assert int(row[2]) == tokens_per_step and float(row[3].replace(",", "")) > 0
    assert 0 < float(row[4].rstrip("%")) < 100


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown where no CUDA device exists")
def test_cuda_without_a_gpu_fails_before_any_run():
    with pytest.raises(ValueError, match=r"--device: got 'cuda'; allowed here: auto, cpu"):
        train_speed.main(["--presets", "base125m", "--device", "cuda"])
