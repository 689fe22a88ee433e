"""Distillation in the training loop (conf/distill): check the `distill` keys, get the teacher (a checkpoint, a
`transformers` model, or one the workbench trains on first use), and turn its outputs into the student's loss.

A teacher given as `distill.teacher_model` is trained with the student's data, optimiser and trainer settings
into `<cache dir>/teachers/<run id of its config>`, under a file lock: the first job of a grid trains it, every
other job (and every relaunch) loads it. The library pieces (samplers, losses, the targets cache) are
`workbench.distill`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import random
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
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
from workbench.presets import PRESETS, get_preset
from workbench.training.checkpoints import checkpoint_file, load_model_from_checkpoint
from workbench.training.grid_job import file_lock
from workbench.training.overrides import CONF_DIR

KINDS = ("none", "sampled", "topk", "full")
HF_PREFIX = "hf:"
MODEL_KEYS = tuple(f.name for f in dataclasses.fields(ModelConfig))
TARGETS_BATCH = 8  # rows per teacher call when precomputing targets (part of the cache's fingerprint)


def check_distill(d: DictConfig | None) -> None:
    """Reject bad `distill` keys before any compute, naming the key, the value and what is allowed."""
    if d is None:
        return
    if d.kind not in KINDS:
        raise ValueError(f"distill.kind: got {d.kind!r}; allowed: {', '.join(KINDS)}")
    if d.kind == "none":  # the other keys are ignored, so a grid's `none` arm keeps the grid's teacher settings
        return
    if not isinstance(d.k, int) or isinstance(d.k, bool) or d.k < 1:
        raise ValueError(f"distill.k: got {d.k!r}; allowed: an integer >= 1")
    if not isinstance(d.alpha, int | float) or not 0.0 <= d.alpha <= 1.0:
        raise ValueError(f"distill.alpha: got {d.alpha!r}; allowed: a number in [0, 1]")
    if (d.teacher is None) == (d.teacher_model is None):
        raise ValueError(
            f"distill.teacher: got {d.teacher!r} with distill.teacher_model {d.teacher_model!r}; allowed: exactly "
            "one of them (a run dir, .ckpt or hf:<dir>; or the model of a teacher to train first)"
        )
    if d.teacher is not None:
        path = Path(str(d.teacher).removeprefix(HF_PREFIX))
        if not path.exists():
            raise ValueError(f"distill.teacher: got {d.teacher!r}; {path} does not exist")
    else:
        _check_teacher_model(d.teacher_model)
        if not isinstance(d.teacher_steps, int) or isinstance(d.teacher_steps, bool) or d.teacher_steps < 1:
            raise ValueError(f"distill.teacher_steps: got {d.teacher_steps!r}; allowed: an integer >= 1")
    if d.cache and d.kind != "sampled":
        raise ValueError(f"distill.cache: got {d.cache!r} with distill.kind {d.kind!r}; allowed: with 'sampled'")


def _check_teacher_model(model: Any) -> None:
    allowed = f"a preset ({', '.join(PRESETS)}) or a map of model keys ({', '.join(MODEL_KEYS)})"
    if isinstance(model, str) and model in PRESETS:
        return
    if isinstance(model, DictConfig | dict) and not set(model) - set(MODEL_KEYS):
        return
    raise ValueError(f"distill.teacher_model: got {model!r}; allowed: {allowed}")


def cache_dir(cfg: DictConfig) -> Path:
    """`distill.cache_dir`, else `distill` beside the token cache, so a test's tmp cache keeps both."""
    if cfg.distill.cache_dir:
        return Path(cfg.distill.cache_dir)
    return Path(cfg.data.get("cache_dir") or ".cache/workbench/tokens").parent / "distill"


# --- the teacher ----------------------------------------------------------------------------------------------


def teacher_config(cfg: DictConfig) -> DictConfig:
    """The config that trains `distill.teacher_model`: the student's data (as resolved), optimiser and trainer,
    with the teacher's model, steps and seed, no tracker and no distillation of its own."""
    d = cfg.distill
    out = OmegaConf.create(OmegaConf.to_container(cfg, resolve=False))
    OmegaConf.set_struct(out, False)
    if isinstance(d.teacher_model, str):
        out.model = get_preset(d.teacher_model).to_dict()
    else:
        out.model = {**OmegaConf.to_container(cfg.model, resolve=True), **OmegaConf.to_container(d.teacher_model)}
    out.data = OmegaConf.to_container(cfg.data, resolve=True)  # seq_len may follow model.max_seq_len: keep it
    out.distill = OmegaConf.load(CONF_DIR / "distill" / "none.yaml")
    out.trainer.max_steps = out.optim.total_steps = d.teacher_steps
    out.seed = d.teacher_seed
    if "init_from" in out:  # the student's starting weights are not the teacher's
        out.init_from = None
    out.logger = {"kind": "none"}
    out.ablation.arm = None
    out.ablation.name = "teacher"
    OmegaConf.set_struct(out, True)
    return out


@contextmanager
def _rng_kept() -> Iterator[None]:
    """The student starts from the same random state whether its teacher was trained here or loaded."""
    py, np_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng():
        yield
    random.setstate(py)
    np.random.set_state(np_state)


def trained_teacher(cfg: DictConfig) -> Path:
    """The run dir of the teacher `distill.teacher_model` asks for, training it first when no run completed it."""
    from workbench.training.grid import run_id
    from workbench.training.grid_job import train_once

    tcfg = teacher_config(cfg)
    with _rng_kept():
        return train_once(tcfg, cache_dir(cfg) / "teachers" / run_id(tcfg), "distill.teacher_model").resolve()


def load_teacher(spec: str | Path) -> nn.Module:
    """`hf:<dir>`: a `transformers` causal LM saved there; else a workbench run dir or checkpoint. Frozen, eval."""
    spec = str(spec)
    if spec.startswith(HF_PREFIX):
        teacher = HFTeacher(spec.removeprefix(HF_PREFIX))
    else:
        teacher = load_model_from_checkpoint(checkpoint_file(spec))
    return teacher.eval().requires_grad_(False)


def teacher_vocab_size(teacher: nn.Module) -> int:
    if isinstance(teacher, HFTeacher):
        return teacher.model.get_output_embeddings().weight.shape[0]
    return teacher.cfg.vocab_size


# --- the loss -------------------------------------------------------------------------------------------------


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
    with file_lock(path):
        targets = teacher_targets(teacher, inputs, path, k, seed, TARGETS_BATCH)
    return targets, {row_key(r): i for i, r in enumerate(inputs)}


def build_distiller(cfg: DictConfig, model_cfg: ModelConfig, bundle: DataBundle) -> Distiller | None:
    """None without distillation; else the teacher (trained here first when `distill.teacher_model` asks for
    one that no run has trained yet), checked against the student's vocabulary."""
    d = cfg.get("distill")
    if d is None or d.kind == "none":
        return None
    check_distill(d)
    spec = d.teacher if d.teacher is not None else trained_teacher(cfg)
    teacher = load_teacher(spec)
    if (vocab := teacher_vocab_size(teacher)) != model_cfg.vocab_size:
        raise ValueError(
            f"distill.teacher: {spec} has vocab_size {vocab}, the student's model.vocab_size is "
            f"{model_cfg.vocab_size}; teacher and student must share the tokenizer"
        )
    if d.kind == "topk" and d.k > vocab:
        raise ValueError(f"distill.k: got {d.k} with distill.kind 'topk'; allowed: at most the vocabulary, {vocab}")
    cached = None
    if d.cache:
        n_batches = cfg.trainer.max_steps * cfg.trainer.accumulate_grad_batches
        cached = cached_targets(teacher, bundle, n_batches, d.k, cfg.seed, cache_dir(cfg))
    return Distiller(teacher, d.kind, d.k, d.alpha, cached, str(spec))
