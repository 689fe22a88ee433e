import math

import torch

from workbench.model import build_model
from workbench.presets import get_preset
from workbench.quant import experiment
from workbench.quant.fake_quant import FakeQuantLinear
from workbench.quant.qat import evaluate_quantized, prepare_qat, qat_loss


def tiny():
    return build_model(get_preset("tiny").replace(n_layers=2))


def test_qat_loss_trains_the_quantised_student_towards_the_frozen_teacher():
    model = tiny()
    batch = torch.randint(0, 256, (4, 17))
    student, teacher = prepare_qat(model, "int4")
    assert student is model and isinstance(student.blocks[0].mlp.down_proj, FakeQuantLinear)
    assert not any(isinstance(m, FakeQuantLinear) for m in teacher.modules())
    assert not any(p.requires_grad for p in teacher.parameters())
    loss = qat_loss(student, teacher, batch)
    loss.backward()
    assert all(p.grad is not None for p in student.parameters() if p.dim() == 2)
    # the target is the teacher's distribution: the soft cross-entropy is at least the teacher's entropy
    with torch.no_grad():
        p = teacher(batch[:, :-1]).softmax(-1)
        entropy = -(p * p.log()).sum(-1).mean()
    assert loss >= entropy - 1e-5
    torch.testing.assert_close(qat_loss(teacher, teacher, batch), entropy)


def test_evaluate_quantized_is_mean_token_cross_entropy():
    model = tiny()
    batches = [torch.randint(0, 256, (2, 9)), torch.randint(0, 256, (3, 9))]
    with torch.no_grad():
        tokens = torch.cat(batches)
        ce = torch.nn.functional.cross_entropy(model(tokens[:, :-1]).flatten(0, 1), tokens[:, 1:].flatten())
    torch.testing.assert_close(evaluate_quantized(model, batches), ce.item())
    labels = tokens[:, 1:].clone()
    labels[:, :4] = -100
    masked = evaluate_quantized(model, [(tokens[:, :-1], labels)])
    assert math.isfinite(masked) and masked != ce.item()
    assert math.isnan(evaluate_quantized(model, []))


def test_experiment_quick_table(capsys):
    rows = experiment.main(
        [
            "--steps",
            "30",
            "--qat-steps",
            "15",
            "--n-bytes",
            "60000",
            "--val-windows",
            "16",
            "--seq-len",
            "32",
            "--batch-size",
            "8",
            "--threads",
            "1",
        ]
    )
    out = capsys.readouterr().out
    assert [r["weights"] for r in rows] == ["fp32", "bf16 PTQ", "int4 PTQ", "int4 QAT"]
    assert "val loss" in out and all(r["weights"] in out for r in rows)
    loss = {r["weights"]: r["val_loss"] for r in rows}
    assert all(math.isfinite(v) for v in loss.values())
    assert loss["int4 QAT"] <= loss["int4 PTQ"] + 0.02
    size = {r["weights"]: r["weight_bytes"] for r in rows}
    assert size["fp32"] == 2 * size["bf16 PTQ"] and size["int4 QAT"] == size["int4 PTQ"] < size["bf16 PTQ"] / 3
