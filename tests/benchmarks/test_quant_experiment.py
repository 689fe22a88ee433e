import math

from benchmarks import quant_experiment

# 30 QAT steps: with the presets' unit post-norm gains (2026-12-08) 15 left QAT 0.026 nats above PTQ on this budget
QUICK = "--steps 30 --qat-steps 30 --val-windows 16 --seq-len 32 --batch-size 8 --threads 1"


def test_experiment_quick_table(capsys, tmp_path):
    rows = quant_experiment.main([*QUICK.split(), "--cache-dir", str(tmp_path)])
    out = capsys.readouterr().out
    assert [r["weights"] for r in rows] == ["fp32", "bf16 PTQ", "int4 PTQ", "int4 QAT"]
    assert "val loss" in out and all(r["weights"] in out for r in rows)
    loss = {r["weights"]: r["val_loss"] for r in rows}
    assert loss["fp32"] < math.log(256) - 1, "30 shared train steps should beat a uniform guess over bytes"
    assert abs(loss["bf16 PTQ"] - loss["fp32"]) < 0.02
    assert loss["int4 QAT"] <= loss["int4 PTQ"] + 0.02
    size = {r["weights"]: r["weight_bytes"] for r in rows}
    assert size["fp32"] == 2 * size["bf16 PTQ"] and size["int4 QAT"] == size["int4 PTQ"] < size["bf16 PTQ"] / 3
