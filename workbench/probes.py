"""Attention-logit and output-logit probes for the soft-cap vs QK-norm question: plain torch, so any loop can use
them (`training.stability.StabilityMonitor` on monitored steps, `benchmarks/stability_overhead.py`).

Fused attention never materialises its logits, so a probed attention module (its `probe` attribute set by
`attach_probes`; None otherwise, which costs one attribute check per forward) scores the step's queries against its
keys again, in float32 and in query chunks, over every visible pair (causal and window masks, all heads, the whole
batch).
"""

from __future__ import annotations

import math

import torch

from workbench.blocks.attention import visible

REFERENCE_CAP = 50.0  # Gemma 2's attention soft-cap
SATURATION = 0.9  # saturated: the capped logit is within 10% of its bound
CHUNK_ELEMENTS = 1 << 18  # scores a probe materialises at once on CPU (1 MiB of float32: stays in cache)
CHUNK_ELEMENTS_ACCELERATOR = 1 << 24  # on GPUs (64 MiB): fewer, larger kernels


def saturation_threshold(cap: float | None) -> float:
    """|logit| from which the tanh cap `cap` (None: `REFERENCE_CAP`) is saturated."""
    return (cap or REFERENCE_CAP) * math.atanh(SATURATION)


class AttentionProbe:
    """Max |logit| and the count of saturated logits over the visible pairs one attention layer scored."""

    def __init__(self, cap: float | None) -> None:
        self.threshold = saturation_threshold(cap)
        self.reset()

    def reset(self) -> None:
        self.max_logit: torch.Tensor | None = None
        self.saturated: torch.Tensor | None = None
        self.pairs = 0

    @torch.compiler.disable  # a compiled model runs it eagerly, outside its graph
    @torch.no_grad()
    def __call__(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        q_pos: torch.Tensor,
        k_pos: torch.Tensor,
        window: int | None,
        scale: float,
        documents: torch.Tensor | None = None,
    ) -> None:
        """q (B, H, Tq, D), k (B, Hk, Tk, D) with H a multiple of Hk (query head h reads key head h // (H / Hk));
        `documents` (B, T): each token's document under document masking (pairs across documents are not scored)."""
        B, H, Tq, D = q.shape
        Hk, Tk = k.shape[1], k.shape[2]
        with torch.autocast(q.device.type, enabled=False):
            qg = (q.float() * scale).reshape(B, Hk, H // Hk, Tq, D)
            kt = k.float().transpose(-2, -1)[:, :, None]  # (B, Hk, 1, D, Tk)
            mask = visible(q_pos, k_pos, window)  # (Tq, Tk), or (B, 1, 1, Tq, Tk) per row's documents
            if documents is not None:
                mask = (mask & (documents[:, :, None] == documents[:, None, :]))[:, None, None]
            budget = CHUNK_ELEMENTS if q.device.type == "cpu" else CHUNK_ELEMENTS_ACCELERATOR
            chunk = max(1, budget // (B * H * Tk))
            peak, saturated = q.new_zeros((), dtype=torch.float32), q.new_zeros((), dtype=torch.long)
            for s in range(0, Tq, chunk):
                m = mask[..., s : s + chunk, :]
                logits = (qg[:, :, :, s : s + chunk] @ kt).abs_().masked_fill_(~m, 0.0)
                peak = torch.maximum(peak, logits.amax())
                saturated += torch.count_nonzero(logits >= self.threshold)  # masked pairs are 0, below any threshold
        self.max_logit = peak if self.max_logit is None else torch.maximum(self.max_logit, peak)
        self.saturated = saturated if self.saturated is None else self.saturated + saturated
        self.pairs += int(mask.sum()) * H * (1 if documents is not None else B)


class LogitProbe:
    """Running sum of squares of the output logits (before the final soft-cap)."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.sum_squares: torch.Tensor | None = None
        self.count = 0

    @torch.compiler.disable
    @torch.no_grad()
    def __call__(self, logits: torch.Tensor) -> None:
        s = torch.linalg.vector_norm(logits, dtype=torch.float32).square()
        self.sum_squares = s if self.sum_squares is None else self.sum_squares + s
        self.count += logits.numel()


Probes = tuple[list[AttentionProbe], list[LogitProbe]]


def attach_probes(module: torch.nn.Module, probes: Probes | None = None) -> Probes:
    """Set a probe on every attention module (in layer order; its soft-cap sets the saturation range) and a logit
    probe on the model. `probes` from an earlier call on the same module are reset and reused, so a compiled model
    meets the same objects on every monitored step (no recompilation)."""
    attention = [m for m in module.modules() if hasattr(m, "probe")]
    models = [m for m in module.modules() if hasattr(m, "logit_probe")]
    probes = probes or ([AttentionProbe(m.softcap) for m in attention], [LogitProbe() for _ in models])
    for m, p in zip(attention, probes[0], strict=True):
        p.reset()
        m.probe = p
    for m, p in zip(models, probes[1], strict=True):
        p.reset()
        m.logit_probe = p
    return probes


def detach_probes(module: torch.nn.Module) -> None:
    for m in module.modules():
        if hasattr(m, "probe"):
            m.probe = None
        if hasattr(m, "logit_probe"):
            m.logit_probe = None


def probe_metrics(attention: list[AttentionProbe], logits: list[LogitProbe]) -> dict[str, float]:
    out = {}
    for i, p in enumerate(attention):
        if p.pairs:
            out[f"stability/max_logit/layer{i}"] = float(p.max_logit)
            out[f"stability/saturation/layer{i}"] = float(p.saturated) / p.pairs
    if count := sum(p.count for p in logits):
        out["stability/output_logit_rms"] = math.sqrt(sum(float(p.sum_squares) for p in logits if p.count) / count)
    return out
