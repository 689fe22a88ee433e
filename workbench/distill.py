"""Knowledge distillation from sampled teacher distributions (Gemma 2/3), the full-distribution loss, and a disk
cache of teacher targets that a grid of students shares; on-policy distillation's loss is `workbench.on_policy`'s.

A target is sparse: per token, `ids` (k vocabulary entries) and `weights` (summing to 1). The student's loss is
the cross-entropy -sum_j weights_j * log p_student(ids_j).

Sampling: k draws with replacement from the teacher's distribution p, each draw weighted 1/k (duplicates keep
their multiplicity). This is the teacher's distribution renormalised over the sample with the self-normalised
importance weights p_v / p_v = 1 per draw. The expected weight of entry v is E[count_v] / k = p_v, and the loss is
linear in the weights, so both the loss and its gradient are unbiased estimates of the full cross-entropy to the
teacher. Renormalising p over the set of distinct sampled ids instead (q_v = p_v / sum_{u in S} p_u) is a ratio
estimator and is biased towards the likely entries for every 1 < k < infinity.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from filelock import FileLock
from torch import nn

from workbench.checkpoints import checkpoint_file, load_model_from_checkpoint
from workbench.data.bundle import IGNORE, DataBundle
from workbench.on_policy import OnPolicy

Teacher = Callable[[torch.Tensor], torch.Tensor]  # input_ids (B, T) -> logits (B, T, vocab)
HF_PREFIX = "hf:"  # a teacher spec hf:<dir>: a `transformers` causal LM saved there


@dataclass
class SparseTargets:
    ids: torch.Tensor  # (..., k) int64
    weights: torch.Tensor  # (..., k) float32, summing to 1 over the last dim


def sample_targets(
    teacher_logits: torch.Tensor, k: int = 256, generator: torch.Generator | None = None
) -> SparseTargets:
    """k draws with replacement in proportion to the teacher's probabilities, each weighted 1/k (unbiased)."""
    probs = teacher_logits.detach().float().softmax(-1)
    ids = torch.multinomial(probs.flatten(0, -2), k, replacement=True, generator=generator)
    ids = ids.view(*probs.shape[:-1], k)
    return SparseTargets(ids, torch.full(ids.shape, 1.0 / k))


def topk_targets(teacher_logits: torch.Tensor, k: int) -> SparseTargets:
    """Deterministic: the k most likely entries, the teacher's probabilities renormalised over them (biased for
    k < vocab; with k == vocab it is the full distribution)."""
    probs, ids = teacher_logits.detach().float().softmax(-1).topk(k, dim=-1)
    return SparseTargets(ids, probs / probs.sum(-1, keepdim=True))


def _mix(kd: torch.Tensor, student_logits: torch.Tensor, labels: torch.Tensor | None, alpha: float) -> torch.Tensor:
    """(1 - alpha) * distillation + alpha * next-token loss, averaged over tokens whose label is not IGNORE."""
    if labels is None:
        if alpha:
            raise ValueError(f"alpha: got {alpha} without labels; the next-token loss needs labels")
        return kd.mean()
    mask = labels != IGNORE
    kd = (kd * mask).sum() / mask.sum().clamp(min=1)
    if not alpha:
        return kd
    ce = F.cross_entropy(student_logits.flatten(0, -2).float(), labels.flatten(), ignore_index=IGNORE)
    return (1 - alpha) * kd + alpha * ce


def sparse_kd_loss(
    student_logits: torch.Tensor, targets: SparseTargets, labels: torch.Tensor | None = None, alpha: float = 0.0
) -> torch.Tensor:
    """Cross-entropy of the student to sparse teacher targets, optionally mixed with the next-token loss."""
    logp = student_logits.float().log_softmax(-1).gather(-1, targets.ids.long())
    kd = -(targets.weights.to(logp) * logp).sum(-1)
    return _mix(kd, student_logits, labels, alpha)


def full_kd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor | None = None,
    alpha: float = 0.0,
) -> torch.Tensor:
    """Cross-entropy of the student to the teacher's full distribution (KL plus the teacher's constant entropy)."""
    teacher_probs = teacher_logits.detach().float().softmax(-1)
    kd = -(teacher_probs * student_logits.float().log_softmax(-1)).sum(-1)
    return _mix(kd, student_logits, labels, alpha)


class HFTeacher(nn.Module):
    """A `transformers` causal LM from a local path, called like a workbench model: input_ids -> logits."""

    def __init__(self, path: str | Path, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        from transformers import AutoModelForCausalLM

        self.model = AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype, local_files_only=True).eval()

    @torch.no_grad()
    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids).logits


# --- the disk cache --------------------------------------------------------------------------------------------


def fingerprint(teacher: nn.Module, inputs: torch.Tensor, k: int, seed: int, batch_size: int) -> str:
    """Hash of everything the targets depend on: teacher weights, data, k, seed and the sampling batch size
    (the generator's stream is consumed batch by batch)."""
    h = hashlib.sha256(f"k={k} seed={seed} batch_size={batch_size}".encode())
    for name, t in teacher.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    h.update(inputs.cpu().contiguous().numpy().tobytes())
    h.update(str(tuple(inputs.shape)).encode())
    return h.hexdigest()


@dataclass
class CachedTargets:
    """Memory-mapped targets; row i of `ids`/`weights` belongs to row i of the inputs they were computed from."""

    ids: np.ndarray  # (N, T, k) int32
    weights: np.ndarray  # (N, T, k) float32

    def batch(self, rows: torch.Tensor | slice) -> SparseTargets:
        """The targets of some input rows, as tensors for `sparse_kd_loss`."""
        rows = rows.numpy() if isinstance(rows, torch.Tensor) else rows
        ids, weights = self.ids[rows].astype(np.int64), np.array(self.weights[rows], dtype=np.float32)
        return SparseTargets(torch.from_numpy(ids), torch.from_numpy(weights))


@torch.no_grad()
def precompute_targets(
    teacher: nn.Module,
    inputs: torch.Tensor,
    path: str | Path,
    k: int = 256,
    seed: int = 0,
    batch_size: int = 8,
) -> CachedTargets:
    """Run the teacher over `inputs` (N, T) once and store sampled targets under `path` (ids.npy, weights.npy and
    meta.json with the fingerprint). Files are written aside and renamed, meta.json last, so an interrupted run is
    recomputed and a reader of an older version keeps its own files."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    (path / "meta.json").unlink(missing_ok=True)
    n, t = inputs.shape
    ids = np.lib.format.open_memmap(path / "ids.tmp.npy", mode="w+", dtype=np.int32, shape=(n, t, k))
    weights = np.lib.format.open_memmap(path / "weights.tmp.npy", mode="w+", dtype=np.float32, shape=(n, t, k))
    generator = torch.Generator().manual_seed(seed)
    was_training = teacher.training
    teacher.eval()
    for start in range(0, n, batch_size):
        targets = sample_targets(teacher(inputs[start : start + batch_size]), k, generator)
        ids[start : start + batch_size] = targets.ids.numpy()
        weights[start : start + batch_size] = targets.weights.numpy()
    teacher.train(was_training)
    for name, array in (("ids", ids), ("weights", weights)):
        array.flush()
        (path / f"{name}.tmp.npy").replace(path / f"{name}.npy")
    meta = {"fingerprint": fingerprint(teacher, inputs, k, seed, batch_size), "k": k, "seed": seed, "shape": [n, t]}
    (path / "meta.tmp.json").write_text(json.dumps(meta))
    (path / "meta.tmp.json").replace(path / "meta.json")
    return CachedTargets(ids, weights)


def load_targets(
    teacher: nn.Module, inputs: torch.Tensor, path: str | Path, k: int = 256, seed: int = 0, batch_size: int = 8
) -> CachedTargets | None:
    """The cached targets if `path` holds ones computed from this teacher, data, k and seed; else None."""
    path = Path(path)
    try:
        meta = json.loads((path / "meta.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    if meta.get("fingerprint") != fingerprint(teacher, inputs, k, seed, batch_size):
        return None
    return CachedTargets(np.load(path / "ids.npy", mmap_mode="r"), np.load(path / "weights.npy", mmap_mode="r"))


def teacher_targets(
    teacher: nn.Module, inputs: torch.Tensor, path: str | Path, k: int = 256, seed: int = 0, batch_size: int = 8
) -> CachedTargets:
    """Load the cached targets, or (re)compute them when missing, incomplete or stale."""
    cached = load_targets(teacher, inputs, path, k, seed, batch_size)
    return cached if cached is not None else precompute_targets(teacher, inputs, path, k, seed, batch_size)


# --- the teacher in a training loop ------------------------------------------------------------------------
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
    Lightning neither saves the teacher in the student's checkpoints nor counts or optimises its parameters.

    `kind` is what the rows the student does not sample get: sampled, topk, full, or none (the next-token loss
    only); `on_policy`, when given, how the first `on_policy.rows(batch)` rows are sampled and scored instead."""

    def __init__(
        self,
        teacher: nn.Module,
        kind: str,
        k: int,
        alpha: float,
        cached: tuple[CachedTargets, dict] | None = None,
        source: str | None = None,
        on_policy: OnPolicy | None = None,
    ) -> None:
        self.teacher, self.kind, self.k, self.alpha = teacher, kind, k, float(alpha)
        self.source = source  # where the teacher came from (results.json's `teacher`)
        self.cached, self.rows = cached if cached is not None else (None, {})
        self.on_policy = on_policy

    def on_policy_rows(self, batch_size: int) -> int:
        return 0 if self.on_policy is None else self.on_policy.rows(batch_size)

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
