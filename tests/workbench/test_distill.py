import math

import pytest
import torch

from tests.numerics import assert_close_to_reference
from workbench.distill import (
    HFTeacher,
    SparseTargets,
    full_kd_loss,
    load_targets,
    precompute_targets,
    sample_targets,
    sparse_kd_loss,
    teacher_targets,
    topk_targets,
)
from workbench.model import build_model
from workbench.presets import get_preset

V = 264


@pytest.mark.numerics
def test_topk_with_k_equal_to_vocab_is_the_full_loss():
    student, teacher = torch.randn(2, 5, V), torch.randn(2, 5, V) * 3
    full = full_kd_loss(student, teacher)
    terms = 2 * V + 10  # the softmaxes' sums and the cross-entropy's over the vocabulary, the mean over 10 rows
    assert_close_to_reference(sparse_kd_loss(student, topk_targets(teacher, V)), full, terms=terms)
    # the full soft cross-entropy is KL(teacher || student) plus the teacher's entropy
    p, logq = teacher.softmax(-1), student.log_softmax(-1)
    kl = (p * (p.log() - logq)).sum(-1).mean()
    assert_close_to_reference(full, kl - (p * p.log()).sum(-1).mean(), terms=terms)


def test_sampled_with_many_draws_approaches_the_full_loss():
    student, teacher = torch.randn(4, 8, V), torch.randn(4, 8, V) * 2
    full = full_kd_loss(student, teacher)
    sampled = sparse_kd_loss(student, sample_targets(teacher, k=20_000, generator=torch.Generator().manual_seed(0)))
    assert abs(sampled - full) < 0.02 * full


def test_sampled_estimator_is_unbiased_for_loss_and_gradient():
    """Over many independent draws of k = 4 samples, the mean loss and the mean gradient with respect to the
    student logits match the full-distribution values within a few standard errors."""
    g = torch.Generator().manual_seed(1234)
    teacher = torch.tensor([[2.0, 1.0, 0.5, 0.0, -0.5, -1.0, -2.0, -3.0]])
    student = torch.randn(1, 8, generator=g).requires_grad_(True)
    full = full_kd_loss(student, teacher)
    (full_grad,) = torch.autograd.grad(full, student)
    draws = 4000
    losses, grads = torch.empty(draws), torch.empty(draws, 8)
    for i in range(draws):
        loss = sparse_kd_loss(student, sample_targets(teacher.expand(1, 8), k=4, generator=g))
        losses[i], grads[i] = loss.detach(), torch.autograd.grad(loss, student)[0][0]
    se = losses.std() / math.sqrt(draws)
    assert abs(losses.mean() - full.detach()) < 4 * se
    grad_se = grads.std(0) / math.sqrt(draws)
    assert ((grads.mean(0) - full_grad[0]).abs() < 4.5 * grad_se).all()
    # and the test has power: renormalising over the distinct sampled ids is biased, and it notices
    biased = []
    for _ in range(draws):
        ids = sample_targets(teacher, k=4, generator=g).ids.unique()
        p = teacher.softmax(-1)[0, ids]
        biased.append(sparse_kd_loss(student, SparseTargets(ids[None], (p / p.sum())[None])).item())
    assert abs(torch.tensor(biased).mean() - full.detach()) > 4 * se


@pytest.mark.numerics
def test_alpha_mixes_next_token_loss_and_labels_mask_tokens():
    student, teacher = torch.randn(2, 6, V), torch.randn(2, 6, V)
    labels = torch.randint(0, V, (2, 6))
    labels[0, :3] = -100
    kd = full_kd_loss(student, teacher, labels)
    ce = torch.nn.functional.cross_entropy(student.flatten(0, 1), labels.flatten(), ignore_index=-100)
    terms = 2 * V + 12  # the softmaxes' sums over the vocabulary, the mean over 12 rows
    assert_close_to_reference(full_kd_loss(student, teacher, labels, alpha=0.25), 0.75 * kd + 0.25 * ce, terms=terms)
    keep = labels != -100
    assert_close_to_reference(kd, full_kd_loss(student[keep], teacher[keep]), terms=terms)
    with pytest.raises(ValueError, match="alpha"):
        full_kd_loss(student, teacher, alpha=0.5)


def tiny(seed: int):
    torch.manual_seed(seed)
    return build_model(get_preset("tiny").replace(n_layers=1))


def test_cache_round_trip_and_invalidation(tmp_path):
    teacher, inputs = tiny(0), torch.randint(0, 256, (5, 12))
    assert load_targets(teacher, inputs, tmp_path, k=16) is None
    stored = precompute_targets(teacher, inputs, tmp_path, k=16, seed=3, batch_size=2)
    loaded = load_targets(teacher, inputs, tmp_path, k=16, seed=3, batch_size=2)
    assert loaded is not None and loaded.ids.shape == (5, 12, 16)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        fresh = [sample_targets(teacher(inputs[i : i + 2]), 16, g) for i in range(0, 5, 2)]
    assert torch.equal(loaded.batch(slice(None)).ids, torch.cat([t.ids for t in fresh]))
    assert torch.equal(loaded.batch(torch.tensor([4, 1])).weights, torch.from_numpy(stored.weights[[4, 1]]))
    # anything the targets depend on changing makes the cache stale
    assert load_targets(teacher, inputs, tmp_path, k=8, seed=3, batch_size=2) is None
    assert load_targets(teacher, inputs, tmp_path, k=16, seed=4, batch_size=2) is None
    assert load_targets(teacher, inputs.flip(0), tmp_path, k=16, seed=3, batch_size=2) is None
    assert load_targets(tiny(1), inputs, tmp_path, k=16, seed=3, batch_size=2) is None
    # teacher_targets recomputes a stale or interrupted cache and then finds it
    other = tiny(0)
    with torch.no_grad():
        other.embed.weight.mul_(30)  # a sharper teacher, so that its samples differ
    redone = teacher_targets(other, inputs, tmp_path, k=16, seed=3, batch_size=2)
    assert not torch.equal(torch.from_numpy(redone.ids), loaded.batch(slice(None)).ids.int())
    assert load_targets(other, inputs, tmp_path, k=16, seed=3, batch_size=2) is not None
    (tmp_path / "meta.json").unlink()
    assert load_targets(other, inputs, tmp_path, k=16, seed=3, batch_size=2) is None


def test_hf_teacher_from_local_path(tmp_path):
    transformers = pytest.importorskip("transformers")
    cfg = transformers.LlamaConfig(
        vocab_size=V, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2
    )
    transformers.LlamaForCausalLM(cfg).save_pretrained(tmp_path)
    teacher, inputs = HFTeacher(tmp_path), torch.randint(0, 256, (2, 7))
    logits = teacher(inputs)
    assert logits.shape == (2, 7, V) and not logits.requires_grad
    cached = precompute_targets(teacher, inputs, tmp_path / "targets", k=8)
    assert load_targets(teacher, inputs, tmp_path / "targets", k=8) is not None
    assert cached.ids.shape == (2, 7, 8)
