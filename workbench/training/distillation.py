"""Distillation in the training loop (conf/distill): load the teacher the run's plan names (a checkpoint, a run
dir, or a `transformers` model), and turn its outputs into the student's loss.

A teacher given as `distill.teacher_model` is a job of the run's plan (`training.plan`), trained before the
student; the student only ever loads it. The library pieces (samplers, losses, the targets cache) are
`workbench.distill`.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from filelock import FileLock
from omegaconf import DictConfig
from torch import nn

from workbench.config import ModelConfig
from workbench.data.bundle import IGNORE, DataBundle
from workbench.distill import (
    CachedTargets,
    HFTeacher,
    SparseTargets,
    fingerprint,
    full_kd_loss,
    sample_targets,
    sparse_kd_loss,
    teacher_targets,
    topk_targets,
)
from workbench.training.checkpoints import checkpoint_file, load_model_from_checkpoint
from workbench.training.schema import HF_PREFIX

TARGETS_BATCH = 8  # rows per teacher call when precomputing targets (part of the cache's fingerprint)


def load_teacher(spec: str | Path) -> nn.Module:
    """`hf:<dir>`: a `transformers` causal LM saved there; else a workbench run dir or checkpoint. Frozen, eval."""
    spec = str(spec)
    if spec.startswith(HF_PREFIX):
        teacher = HFTeacher(spec.removeprefix(HF_PREFIX))
    else:
        teacher = load_model_from_checkpoint(checkpoint_file(spec))
    return teacher.eval().requires_grad_(False)


class Distiller:
    """A frozen teacher and how its outputs become the student's loss. A plain object, not an `nn.Module`, so
    Lightning neither saves the teacher in the student's checkpoints nor counts or optimises its parameters."""

    def __init__(
        self,
        teacher: nn.Module,
        kind: str,
        k: int,
        alpha: float,
        cached: tuple[CachedTargets, dict] | None = None,
        source: str | None = None,
    ) -> None:
        self.teacher, self.kind, self.k, self.alpha = teacher, kind, k, float(alpha)
        self.source = source  # where the teacher came from (results.json's `teacher`)
        self.cached, self.rows = cached if cached is not None else (None, {})

    def to(self, device: torch.device) -> Distiller:
        self.teacher.to(device)
        return self

    @torch.no_grad()
    def teacher_logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.teacher(x)

    def kd_loss(self, logits: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of the student to this batch's teacher targets, mean over labelled tokens."""
        if self.cached is not None:
            return sparse_kd_loss(logits, self._cached_targets(x, logits.device), y)
        t = self.teacher_logits(x)
        if self.kind == "full":
            return full_kd_loss(logits, t, y)
        targets = sample_targets(t, self.k) if self.kind == "sampled" else topk_targets(t, self.k)
        return sparse_kd_loss(logits, targets, y)

    def full_kd_sum(self, logits: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Summed over labelled tokens: the full cross-entropy to the teacher, comparable across k."""
        return full_kd_loss(logits, self.teacher_logits(x), y) * (y != IGNORE).sum()

    def mix(self, kd: torch.Tensor, next_token: torch.Tensor) -> torch.Tensor:
        return (1 - self.alpha) * kd + self.alpha * next_token if self.alpha else kd

    def _cached_targets(self, x: torch.Tensor, device: torch.device) -> SparseTargets:
        try:
            rows = torch.tensor([self.rows[row_key(r)] for r in x.cpu()])
        except KeyError:
            raise RuntimeError("distill.cache: a training batch is not among the cached targets' inputs") from None
        targets = self.cached.batch(rows)
        return SparseTargets(targets.ids.to(device), targets.weights.to(device))


def row_key(row: torch.Tensor) -> bytes:
    """Cached targets are found by their input row's content, so any batch order (resume, accumulation) works."""
    return hashlib.blake2b(row.numpy().tobytes(), digest_size=16).digest()


def cached_targets(
    teacher: nn.Module, bundle: DataBundle, n_batches: int, k: int, seed: int, root: Path
) -> tuple[CachedTargets, dict[bytes, int]]:
    """Targets for the inputs of training batches 0..n_batches-1, from `<root>/targets/<fingerprint>` when some
    run computed them from the same teacher, data, k and seed; computed and stored there otherwise."""
    inputs = torch.cat([bundle.train(i)[0] for i in range(n_batches)])
    path = root / "targets" / fingerprint(teacher, inputs, k, seed, TARGETS_BATCH)[:20]
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(path.with_name(path.name + ".lock")):
        targets = teacher_targets(teacher, inputs, path, k, seed, TARGETS_BATCH)
    return targets, {row_key(r): i for i, r in enumerate(inputs)}


def build_distiller(
    cfg: DictConfig, model_cfg: ModelConfig, bundle: DataBundle, spec: str | None, cache_root: Path
) -> Distiller | None:
    """None without distillation; else the teacher at `spec` (the plan's input), checked against the student's
    vocabulary."""
    d = cfg.distill
    if d.kind == "none":
        return None
    teacher = load_teacher(spec)
    head = teacher.model.get_output_embeddings() if isinstance(teacher, HFTeacher) else None
    if (vocab := teacher.cfg.vocab_size if head is None else head.weight.shape[0]) != model_cfg.vocab_size:
        raise ValueError(
            f"distill.teacher: {spec} has vocab_size {vocab}, the student's model.vocab_size is "
            f"{model_cfg.vocab_size}; teacher and student must share the tokenizer"
        )
    cached = None
    if d.cache:
        n_batches = cfg.trainer.max_steps * cfg.trainer.accumulate_grad_batches
        cached = cached_targets(teacher, bundle, n_batches, d.k, cfg.seed, cache_root)
    return Distiller(teacher, d.kind, d.k, d.alpha, cached, str(spec))
