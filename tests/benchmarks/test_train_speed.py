import pytest
import torch

from benchmarks import train_speed
from workbench.accounting import generation_flops, param_counts, training_flops
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
    assert row[1] == "none" and row[5] == "-"
    assert [*row[3:5], row[6]] == [str(tokens_per_step), f"{r['tokens_per_s']:,.0f}", f"{r['mfu']:.1%}"]


@pytest.mark.slow  # a one-step teacher and two students: about 30 s on a shared 2-core CPU
def test_off_and_on_policy_distillation_side_by_side(capsys):
    """One run, a row per mode: the on-policy row counts the tokens the student sampled and, in its FLOPs per
    batch, their generation; the off-policy row trains on the same tokens with the same FLOPs as plain training."""
    args = ["--presets", "tiny", "--quick", "--device", "cpu", "--precision", "32-true", "--modes", "off_policy",
            "on_policy", "--prompt-len", "16", "--new-tokens", "24"]  # fmt: skip
    off, on = train_speed.main(args)
    rows = {line.split()[1]: line.split() for line in capsys.readouterr().out.splitlines() if line.startswith("tiny ")}
    assert set(rows) == {"off_policy", "on_policy"} and rows["off_policy"][5] == "-"
    q, tiny = train_speed.QUICK, get_preset("tiny")
    tokens_per_step = q["batch_size"] * q["seq_len"]
    assert on["tokens_seen"] == off["tokens_seen"] == q["steps"] * tokens_per_step
    sampled_rows = round(train_speed.MIX * q["batch_size"])
    assert rows["on_policy"][5] == f"{sampled_rows * 24 * on['tokens_per_s'] / tokens_per_step:,.0f}"
    assert off["flops_per_batch"] == q["batch_size"] * training_flops(tiny, q["seq_len"])
    on_row = generation_flops(tiny, 16, 24) + training_flops(tiny, 16 + 24 - 1)
    rest = (q["batch_size"] - sampled_rows) * training_flops(tiny, q["seq_len"])
    assert on["flops_per_batch"] == sampled_rows * on_row + rest


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown where no CUDA device exists")
def test_cuda_without_a_gpu_fails_before_any_run():
    with pytest.raises(ValueError, match=r"--device: got 'cuda'; allowed here: auto, cpu"):
        train_speed.main(["--presets", "base125m", "--device", "cuda"])
