import torch

from workbench.model import build_model
from workbench.presets import get_preset
from workbench.quant.fake_quant import FakeQuantLinear
from workbench.quant.qat import prepare_qat, qat_loss


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
