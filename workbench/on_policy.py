"""On-policy distillation (GKD, Agarwal et al. 2024): the student samples continuations of prompts, the teacher
scores the sampled tokens, and the loss is the generalized Jensen-Shannon divergence between the two.

The divergence is the one TRL's `GKDTrainer.generalized_jsd_loss` computes (tests/workbench/test_on_policy.py checks
it equals TRL's): with both logits divided by `temperature`, student s and teacher t, and m = (1 - beta) s + beta t,

    JSD_beta = beta KL(t || m) + (1 - beta) KL(s || m),   KL(t || s) at beta = 0,   KL(s || t) at beta = 1,

summed over the vocabulary and averaged over the sampled tokens. beta = 0 is the forward KL the off-policy modes
minimise (mean-seeking), beta = 1 the reverse KL (mode-seeking). Over the teacher's top-k (`support="topk"`) both
distributions are renormalised over the teacher's k most likely entries of each position, as `topk` does off-policy.

Sampling runs under no_grad with the KV cache (`workbench.generate`, a ring buffer on local layers), all sampled rows
in one batch; its generator is seeded by (seed, step, micro-batch), so a rerun and a resumed run draw the same tokens.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from workbench.generate import generate
from workbench.model import Transformer

Logits = Callable[[torch.Tensor], torch.Tensor]  # input_ids (B, T) -> logits (B, T, vocab)
SUPPORTS = ("full", "topk")


@dataclass(frozen=True)
class OnPolicy:
    """How a batch's on-policy rows are made and scored (the `distill.*` keys of the same names)."""

    mix: float  # fraction of each batch's rows sampled by the student
    beta: float  # 0: forward KL(teacher || student), 1: reverse KL(student || teacher)
    prompt_len: int  # tokens of the training row the continuation starts from
    new_tokens: int  # tokens the student samples per row
    temperature: float = 1.0  # sampling temperature, and the loss's (as TRL's GKD)
    top_k: int | None = None  # sample among the student's top_k tokens; None: the whole vocabulary
    support: str = "full"  # "full": the whole vocabulary; "topk": the teacher's k most likely entries
    k: int = 256  # entries per position with support "topk"
    seed: int = 0

    def __post_init__(self) -> None:
        if not (0 <= self.mix <= 1 and 0 <= self.beta <= 1 and self.temperature > 0):
            raise ValueError(f"mix={self.mix}, beta={self.beta}, temperature={self.temperature}; allowed: mix and "
                             "beta in [0, 1], temperature > 0")  # fmt: skip
        if self.prompt_len < 1 or self.new_tokens < 1 or self.k < 1 or self.support not in SUPPORTS:
            raise ValueError(f"prompt_len={self.prompt_len}, new_tokens={self.new_tokens}, k={self.k}, "
                             f"support={self.support!r}; allowed: integers >= 1, support one of "
                             f"{', '.join(SUPPORTS)}")  # fmt: skip

    def rows(self, batch_size: int) -> int:
        """How many of a batch's rows are on-policy: the first round(mix x batch) (the loader shuffles rows)."""
        return round(self.mix * batch_size)

    def generator(self, device: torch.device, step: int, micro_batch: int) -> torch.Generator:
        """A generator for one micro-batch's sampling: the same (seed, step, micro-batch), the same draws."""
        key = hashlib.blake2b(f"{self.seed}/{step}/{micro_batch}".encode(), digest_size=8).digest()
        return torch.Generator(device=device).manual_seed(int.from_bytes(key) >> 1)

    @torch.no_grad()
    def sample(self, student: Transformer, prompts: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """(B, prompt_len + new_tokens): the rows' first prompt_len tokens and what the student samples after them."""
        return generate(student, prompts[:, : self.prompt_len], self.new_tokens, self.temperature, self.top_k,
                        generator)  # fmt: skip

    def loss(self, student: Logits, teacher: Logits, sequences: torch.Tensor) -> torch.Tensor:
        """The divergence at the sampled positions of `sequences` (from `sample`); gradient through the student."""
        inputs = sequences[:, :-1]
        scored = slice(self.prompt_len - 1, None)  # the positions whose next token the student sampled
        student_logits = student(inputs)[:, scored]
        with torch.no_grad():
            teacher_logits = teacher(inputs)[:, scored]
        if self.support == "topk":
            student_logits, teacher_logits = on_teacher_topk(student_logits, teacher_logits, self.k)
        return generalized_jsd(student_logits, teacher_logits, self.beta, self.temperature)


def on_teacher_topk(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Both logits at the teacher's k most likely entries per position: a softmax over them renormalises each
    distribution over that set (k = vocab: the full distributions, reordered)."""
    ids = teacher_logits.topk(min(k, teacher_logits.shape[-1]), dim=-1).indices
    return student_logits.gather(-1, ids), teacher_logits.gather(-1, ids)


def generalized_jsd(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    beta: float,
    temperature: float = 1.0,
) -> torch.Tensor:
    """GKD's generalized JSD (module docstring), summed over the last dim, averaged over the other dims."""
    s = (student_logits.float() / temperature).log_softmax(-1)
    t = (teacher_logits.detach().float() / temperature).log_softmax(-1)
    if beta == 0:
        per_token = _kl(t, s)
    elif beta == 1:
        per_token = _kl(s, t)
    else:
        m = torch.logaddexp(s + math.log1p(-beta), t + math.log(beta))
        per_token = beta * _kl(t, m) + (1 - beta) * _kl(s, m)
    return per_token.mean()


def _kl(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """KL(p || q) per position from log-probabilities; 0 log 0 = 0 where p has no mass."""
    return F.kl_div(log_q, log_p, reduction="none", log_target=True).sum(-1)
