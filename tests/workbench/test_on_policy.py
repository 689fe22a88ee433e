"""`workbench.on_policy` against TRL's GKD loss, analytic gradients, and the student's own logits.

TRL (the `test` extra) is the reference implementation of the generalized JSD the GKD paper defines; it runs in
float64 here, ours in float32. The float32 logits are off by eps32/2 of their size, so each log-probability (a
logit minus a log-sum-exp) is off by at most eps32 x max|logit| / temperature, and a divergence, two log-probabilities
per term with weights summing to at most 2, by at most 4 x that: the tolerance.
"""

import os
import warnings

import pytest
import torch

from workbench import build_model, get_preset
from workbench.on_policy import OnPolicy, generalized_jsd, on_teacher_topk

VOCAB = 50
EPS32 = torch.finfo(torch.float32).eps


def trl_loss():
    """TRL's `GKDTrainer.generalized_jsd_loss` (its `experimental` package warns on import; nothing else)."""
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from trl.experimental.gkd import GKDTrainer
    return GKDTrainer.generalized_jsd_loss


def random_logits(seed: int, shape=(3, 7, VOCAB), scale: float = 3.0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g, dtype=torch.float64) * scale, torch.randn(
        shape, generator=g, dtype=torch.float64
    ) * scale


@pytest.mark.slow  # importing TRL takes 10-20 s
@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0, 0.1])
@pytest.mark.parametrize("temperature", [1.0, 2.0, 0.7])
def test_generalized_jsd_equals_trl(beta, temperature):
    student, teacher = random_logits(int(beta * 10 + temperature * 100))
    labels = torch.zeros(student.shape[:-1], dtype=torch.long)  # every position counts: TRL's mean over tokens
    reference = trl_loss()(student, teacher, labels=labels, beta=beta, temperature=temperature)
    ours = generalized_jsd(student.float(), teacher.float(), beta, temperature)
    tolerance = 4 * EPS32 * max(student.abs().max(), teacher.abs().max()) / temperature
    assert ours.dtype == torch.float32 and reference > 0.1
    assert abs(float(ours) - float(reference)) <= tolerance, (float(ours), float(reference))


def test_forward_and_reverse_kl_gradients_are_analytic():
    """beta 0 is KL(t || s): d/ds = softmax(s) - softmax(t) (over T = 1); beta 1 is KL(s || t), whose gradient
    is p_s * (log p_s - log p_t - KL(s || t)); both at temperature 1, one position."""
    student, teacher = random_logits(7, shape=(1, 1, VOCAB))
    s, t = student.float().requires_grad_(), teacher.float()
    generalized_jsd(s, t, 0.0).backward()
    torch.testing.assert_close(s.grad, (student.softmax(-1) - teacher.softmax(-1)).float(), atol=8 * EPS32, rtol=0)
    s.grad = None
    generalized_jsd(s, t, 1.0).backward()
    log_ps, log_pt = student.log_softmax(-1), teacher.log_softmax(-1)
    kl = (log_ps.exp() * (log_ps - log_pt)).sum(-1, keepdim=True)
    expected = log_ps.exp() * (log_ps - log_pt - kl)
    torch.testing.assert_close(s.grad, expected.float(), atol=64 * EPS32, rtol=0)


def test_topk_support_is_the_full_distribution_at_k_equal_vocab_and_only_touches_the_teachers_top_k():
    student, teacher = (x.float() for x in random_logits(3))
    full = generalized_jsd(student, teacher, 0.5)
    torch.testing.assert_close(generalized_jsd(*on_teacher_topk(student, teacher, VOCAB), 0.5), full)
    s = student.clone().requires_grad_()
    generalized_jsd(*on_teacher_topk(s, teacher, 5), 0.5).backward()
    top = torch.zeros_like(s, dtype=torch.bool).scatter_(-1, teacher.topk(5, dim=-1).indices, True)
    assert (s.grad[~top] == 0).all() and (s.grad[top] != 0).all()


TINY = get_preset("tiny").replace(n_layers=2, d_model=64, mlp_hidden=128, window=8, max_seq_len=64)


def make(**kw) -> OnPolicy:
    return OnPolicy(**{"mix": 0.5, "beta": 0.5, "prompt_len": 6, "new_tokens": 12, "temperature": 1.3, **kw})


def test_sampling_with_a_fixed_seed_is_reproducible_and_keeps_the_prompt():
    torch.manual_seed(0)
    model = build_model(TINY).train()
    prompts = torch.randint(0, TINY.vocab_size, (4, 20))
    op = make()
    first = op.sample(model, prompts, op.generator(torch.device("cpu"), step=3, micro_batch=1))
    again = make().sample(model, prompts, op.generator(torch.device("cpu"), step=3, micro_batch=1))
    other_step = op.sample(model, prompts, op.generator(torch.device("cpu"), step=4, micro_batch=1))
    other_seed = make(seed=1).sample(model, prompts, make(seed=1).generator(torch.device("cpu"), 3, 1))
    assert first.shape == (4, 6 + 12) and torch.equal(first[:, :6], prompts[:, :6])
    assert torch.equal(first, again)
    assert not torch.equal(first, other_step) and not torch.equal(first, other_seed)
    assert model.training  # sampling leaves the student in training mode


def test_samples_lie_in_the_students_top_k_of_its_own_full_forward():
    """The cached, ring-buffered decode (window 8 < 18 tokens) samples from the same logits a full forward gives:
    with top_k 3 every sampled token is among the full forward's 3 most likely at its position."""
    torch.manual_seed(1)
    model = build_model(TINY)
    op = make(top_k=3, temperature=5.0)  # a high temperature: all three are drawn
    seq = op.sample(model, torch.randint(0, TINY.vocab_size, (8, 6)), op.generator(torch.device("cpu"), 0, 0))
    with torch.no_grad():
        top3 = model.eval()(seq[:, :-1])[:, op.prompt_len - 1 :].topk(3, dim=-1).indices
    sampled = seq[:, op.prompt_len :, None]
    assert (sampled == top3).any(-1).all()
    assert len({int(r) for r in (sampled == top3).float().argmax(-1).flatten()}) == 3


def test_loss_scores_only_the_sampled_positions_and_trains_only_the_student():
    torch.manual_seed(2)
    student, teacher = build_model(TINY), build_model(TINY).requires_grad_(False)
    op = make()
    seq = op.sample(student, torch.randint(0, TINY.vocab_size, (2, 6)), op.generator(torch.device("cpu"), 0, 0))
    loss = op.loss(student, teacher, seq)
    with torch.no_grad():
        s, t = student(seq[:, :-1])[:, 5:], teacher(seq[:, :-1])[:, 5:]
    assert s.shape[1] == op.new_tokens
    torch.testing.assert_close(loss, generalized_jsd(s, t, 0.5, 1.3))
    loss.backward()
    assert student.embed.weight.grad is not None and teacher.embed.weight.grad is None
    with torch.no_grad():  # a student is its own teacher
        assert float(op.loss(student, student, seq)) == pytest.approx(0, abs=EPS32)


@pytest.mark.parametrize(
    "kw", [{"mix": 1.5}, {"beta": -0.1}, {"temperature": 0.0}, {"prompt_len": 0}, {"support": "sampled"}]
)
def test_bad_settings(kw):
    with pytest.raises(ValueError, match="allowed"):
        make(**kw)


def test_rows_are_round_mix_times_batch():
    assert [make(mix=m).rows(8) for m in (0.0, 0.25, 0.5, 1.0)] == [0, 2, 4, 8]
