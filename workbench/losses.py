"""The next-token loss every training path shares: cross-entropy summed in float32, chunked so that bfloat16 logits
never get a full-vocabulary float32 copy; and the z-loss (log² of the softmax normaliser), chunked the same way."""

from __future__ import annotations

import torch

from workbench.data.bundle import IGNORE

CE_CHUNK_ELEMENTS = 1 << 20  # logits upcast to float32 at once by `cross_entropy_sum` (4 MiB)


def _row_logsumexp(flat: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Each row's logsumexp in float32 (or float64), rows upcast a chunk at a time; and the chunk, in rows."""
    compute = torch.promote_types(flat.dtype, torch.float32)
    chunk = max(1, CE_CHUNK_ELEMENTS // flat.shape[1])
    return torch.cat([torch.logsumexp(flat[s : s + chunk].to(compute), -1) for s in range(0, len(flat), chunk)]), chunk


class _CrossEntropySum(torch.autograd.Function):
    """Summed cross-entropy in float32 without a float32 copy of the whole logits tensor.

    `logits.float()` then `F.cross_entropy` keep two full-vocabulary float32 tensors (the copy and log_softmax's
    output, saved for backward) beside the bfloat16 logits; this upcasts chunks of rows, saves only the logits
    and each row's logsumexp, and writes the gradient in the logits' dtype. Float32 logits: the same numbers in
    one fewer full-vocabulary tensor.
    """

    @staticmethod
    def forward(ctx, logits: torch.Tensor, targets: torch.Tensor, ignore_index: int) -> torch.Tensor:
        flat, t = logits.reshape(-1, logits.shape[-1]), targets.reshape(-1)
        lse, chunk = _row_logsumexp(flat)
        compute = lse.dtype
        valid = t != ignore_index
        picked = flat.gather(1, t.clamp(min=0)[:, None]).squeeze(1).to(compute)
        ctx.save_for_backward(logits, t, lse)
        ctx.ignore_index, ctx.chunk = ignore_index, chunk
        return ((lse - picked) * valid).sum()

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        logits, t, lse = ctx.saved_tensors
        flat = logits.reshape(-1, logits.shape[-1])
        out = torch.empty_like(flat)
        valid = (t != ctx.ignore_index).to(lse.dtype) * grad
        rows = torch.arange(len(flat), device=flat.device)
        for s in range(0, len(flat), ctx.chunk):
            e = min(len(flat), s + ctx.chunk)
            g = (flat[s:e].to(lse.dtype) - lse[s:e, None]).exp_()  # softmax
            g[rows[: e - s], t[s:e].clamp(min=0)] -= 1.0
            out[s:e] = g.mul_(valid[s:e, None])
        return out.view_as(logits), None, None


def cross_entropy_sum(logits: torch.Tensor, targets: torch.Tensor, ignore_index: int = IGNORE) -> torch.Tensor:
    """Σ over targets that are not `ignore_index` of -log softmax(logits)[target], in float32 (or float64)."""
    return _CrossEntropySum.apply(logits, targets, ignore_index)


class _LogZSquaredSum(torch.autograd.Function):
    """Σ over rows of (log Σ_v e^{logit_v})², chunked like `_CrossEntropySum`: no float32 copy of the whole logits.

    d(log² Z)/d logits = 2 log Z · softmax(logits), written in the logits' dtype.
    """

    @staticmethod
    def forward(ctx, logits: torch.Tensor, targets: torch.Tensor, ignore_index: int) -> torch.Tensor:
        flat, t = logits.reshape(-1, logits.shape[-1]), targets.reshape(-1)
        lse, chunk = _row_logsumexp(flat)
        compute = lse.dtype
        valid = (t != ignore_index).to(compute)
        ctx.save_for_backward(logits, lse, valid)
        ctx.chunk = chunk
        return (lse.square() * valid).sum()

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        logits, lse, valid = ctx.saved_tensors
        flat = logits.reshape(-1, logits.shape[-1])
        out = torch.empty_like(flat)
        weight = 2 * lse * valid * grad
        for s in range(0, len(flat), ctx.chunk):
            e = min(len(flat), s + ctx.chunk)
            out[s:e] = (flat[s:e].to(lse.dtype) - lse[s:e, None]).exp_().mul_(weight[s:e, None])
        return out.view_as(logits), None, None


def z_loss_sum(logits: torch.Tensor, targets: torch.Tensor, ignore_index: int = IGNORE) -> torch.Tensor:
    """Σ over positions whose target is not `ignore_index` of log² Z, Z the output softmax's normaliser (the z-loss
    of PaLM and OLMo-core: it keeps log Z near 0, so the logits cannot drift together), in float32 (or float64)."""
    return _LogZSquaredSum.apply(logits, targets, ignore_index)


@torch.no_grad()
def row_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, ignore_index: int = IGNORE) -> torch.Tensor:
    """Per row of `targets` ([rows x positions]): Σ over its labelled targets of -log softmax(logits)[target], in
    float32 (or float64), chunked as `cross_entropy_sum`. Validation sums these, and their spread over the rows gives
    val_loss's standard error (`workbench.evaluate.ratio_se`)."""
    flat, t = logits.reshape(-1, logits.shape[-1]), targets.reshape(-1)
    lse, _ = _row_logsumexp(flat)
    compute = lse.dtype
    picked = flat.gather(1, t.clamp(min=0)[:, None]).squeeze(1).to(compute)
    return ((lse - picked) * (t != ignore_index)).view(targets.shape).sum(-1)
