"""Self-attention blocks, registered by name. `mha` covers multi-head, grouped-query and multi-query attention."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from workbench.cache import LayerCache
from workbench.registry import ATTENTION, NORM, POSITION

if TYPE_CHECKING:
    from workbench.config import ModelConfig


ATTENTION_PATHS = ("auto", "dense", "flex")
_path = "auto"


@contextmanager
def attention_path(name: str) -> Iterator[None]:
    """Force one attention path, so benchmarks and tests can compare paths on the same model and weights.

    auto: the dispatch in `self_attention`; dense: an explicit boolean mask for every layer; flex:
    `flex_attention` with a causal / sliding-window block mask when nothing is cached (compiled on CUDA; eager
    on CPU, a slow reference), the dense mask otherwise.
    """
    global _path
    if name not in ATTENTION_PATHS:
        raise ValueError(f"attention path: got {name!r}; allowed: {', '.join(ATTENTION_PATHS)}")
    previous, _path = _path, name
    try:
        yield
    finally:
        _path = previous


def visible(q_pos: torch.Tensor, k_pos: torch.Tensor, window: int | None) -> torch.Tensor:
    """Boolean (Tq, Tk) mask: key j is visible from query i iff j <= i and, with a window W, i - W < j."""
    mask = k_pos[None, :] <= q_pos[:, None]
    if window is not None:
        mask &= k_pos[None, :] > q_pos[:, None] - window
    return mask


def attended_pairs(tokens: int, window: int | None, start: int = 0) -> int:
    """(query, key) pairs that positions start..start+tokens-1 attend, as `visible` masks them: Σ_i min(i+1, W).

    The first `start` tokens are cached; window None: a global layer, Σ_i (i+1).
    """

    def prefix(n: int) -> int:
        if window is None or n <= window:
            return n * (n + 1) // 2
        return window * (window + 1) // 2 + (n - window) * window

    return prefix(start + tokens) - prefix(start)


def attend(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None,
    scale: float,
    softcap: float | None,
    dropout: float,
) -> torch.Tensor:
    """softmax(mask(cap(q k^T * scale))) v over (..., heads, T, dim); k/v heads shared by groups of query heads.

    mask None means plain causal attention with as many keys as queries.
    """
    if softcap is None:
        return F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=dropout, scale=scale, is_causal=mask is None, enable_gqa=True
        )
    if mask is None:
        positions = torch.arange(q.shape[-2], device=q.device)
        mask = visible(positions, positions, None)
    groups = q.shape[-3] // k.shape[-3]
    k, v = k.repeat_interleave(groups, dim=-3), v.repeat_interleave(groups, dim=-3)
    scores = (q @ k.transpose(-2, -1)) * scale
    scores = softcap * torch.tanh(scores / softcap)
    scores = scores.masked_fill(~mask, float("-inf"))
    probs = F.dropout(scores.softmax(dim=-1, dtype=torch.float32).to(q.dtype), dropout)
    return probs @ v


def attend_blocked_local(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, window: int, scale: float, softcap: float | None, dropout: float
) -> torch.Tensor:
    """Sliding-window attention in O(T * W): each block of b queries sees the W + b keys that end with its own block.

    Query jb + a sees key jb - W + c iff a < c <= a + W, which is exactly i - W < j <= i; keys before position 0
    are padding. b = W/4 where W is a multiple of 4 (else W): 1.25W keys per query instead of 2W, about 40% less
    attention time on CPU at W = 1024 (measured: train step and forward of one layer at T = 4096).
    Blocks are folded into the batch so SDPA gets 4-D inputs: it has fused CPU/CUDA kernels for those only (5-D
    inputs fall back to the unfused math path, 2x slower forward on CPU).
    """
    B, T = q.shape[0], q.shape[-2]
    block = window // 4 if window % 4 == 0 else window
    n = -(-T // block)
    pad = n * block - T

    def key_blocks(x: torch.Tensor) -> torch.Tensor:  # (B, h, T, d) -> (B * n, h, W + b, d)
        x = F.pad(x, (0, 0, window, pad)).unfold(2, window + block, block)  # (B, h, n, d, W + b)
        return x.permute(0, 2, 1, 4, 3).flatten(0, 1)

    q_blocks = F.pad(q, (0, 0, 0, pad)).unflatten(2, (n, block)).transpose(1, 2).flatten(0, 1)
    a = torch.arange(block, device=q.device)[:, None]
    c = torch.arange(window + block, device=q.device)[None, :]
    first_key = torch.arange(n, device=q.device)[:, None, None] * block - window  # position of key c = 0
    mask = (c > a) & (c <= a + window) & (first_key + c >= 0)
    out = attend(q_blocks, key_blocks(k), key_blocks(v), mask[:, None].repeat(B, 1, 1, 1), scale, softcap, dropout)
    return out.unflatten(0, (B, n)).transpose(1, 2).flatten(2, 3)[:, :, :T]


@functools.cache
def _flex_kernel(device_type: str):
    from torch.nn.attention.flex_attention import flex_attention

    return flex_attention if device_type == "cpu" else torch.compile(flex_attention, dynamic=False)


@functools.lru_cache(maxsize=8)
def _flex_block_mask(n: int, window: int | None, device: torch.device):
    """One block mask per (length, window), shared by every layer of that type in a forward pass."""
    from torch.nn.attention.flex_attention import create_block_mask

    def mask_mod(b, h, i, j):
        return (j <= i) & (j > i - window) if window is not None else j <= i

    return create_block_mask(mask_mod, None, None, n, n, device=device)


def attend_flex(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, window: int | None, scale: float, softcap: float | None
) -> torch.Tensor:
    """`flex_attention` over a sequence with no cached keys: only the blocks the window touches are computed.

    flex_attention is no autocast op: q and k (float32 after a plain RMSNorm under bf16 autocast) take v's dtype,
    as SDPA's autocast casts them.
    """
    block_mask = _flex_block_mask(q.shape[-2], window, q.device)
    flex = _flex_kernel(q.device.type)
    score_mod = _softcap_mod(softcap) if softcap else None
    return flex(
        q.to(v.dtype), k.to(v.dtype), v, score_mod=score_mod, block_mask=block_mask, scale=scale, enable_gqa=True
    )


@functools.cache
def _softcap_mod(softcap: float):
    """One score_mod per cap value: the compiled kernel sees the same function every call (no recompiles)."""

    def capped(score, b, h, i, j):
        return softcap * torch.tanh(score / softcap)

    return capped


def self_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    q_pos: torch.Tensor,
    k_pos: torch.Tensor,
    window: int | None,
    scale: float,
    softcap: float | None,
    dropout: float,
) -> torch.Tensor:
    """Pick the attention path: `auto_kernel`'s choice without cached keys, the explicit mask otherwise.

    `attention_path` overrides the choice (dense: always the explicit mask; flex: `attend_flex` without cache).
    """
    if _path == "flex" and k.shape[-2] == q.shape[-2]:
        if dropout:
            raise ValueError(f"dropout: got {dropout}; allowed: 0 on the flex attention path")
        return attend_flex(q, k, v, window, scale, softcap)
    # nothing cached before these tokens: keys are the queries' own positions
    if _path == "auto" and k.shape[-2] == q.shape[-2]:
        kernel = auto_kernel(q.device.type, q.shape[-2], window, softcap, dropout)
        if kernel == "flex":
            return attend_flex(q, k, v, window, scale, softcap)
        if kernel == "causal":
            return attend(q, k, v, None, scale, softcap, dropout)
        if kernel == "blocked":
            return attend_blocked_local(q, k, v, window, scale, softcap, dropout)
    return attend(q, k, v, visible(q_pos, k_pos, window), scale, softcap, dropout)


def auto_kernel(device_type: str, length: int, window: int | None, softcap: float | None, dropout: float) -> str:
    """The kernel the auto path runs over `length` tokens with nothing cached: causal, blocked, flex or masked.

    CUDA: compiled `flex_attention` for local and soft-capped layers (only the blocks the window touches; the
    cap is a score_mod), SDPA's fused causal kernel (flash) for the other global layers; flex has no dropout, so
    training with dropout keeps the CPU choice. CPU: SDPA causal for global layers (soft-capped ones run the
    explicit math), the blocked O(T * W) path for local layers when the length is a multiple of the window and
    at least twice it (no padded blocks, no wasted pairs), the explicit mask otherwise.
    """
    local = window is not None and window < length
    if device_type == "cuda" and not dropout and (local or softcap is not None):
        return "flex"
    if not local:
        return "causal"
    return "blocked" if length >= 2 * window and length % window == 0 else "masked"


@ATTENTION.register("mha")
class MultiHeadAttention(nn.Module):
    """GQA attention with optional QK-norm (after projection, before RoPE) and tanh logit soft-capping.

    `window` is None on global layers; on local layers it may be changed after training (`set_window`).
    """

    def __init__(self, cfg: ModelConfig, local: bool) -> None:
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = cfg.n_heads, cfg.n_kv_heads, cfg.resolved_head_dim
        self.scale = cfg.attn_scale
        self.softcap = cfg.softcap
        self.window = cfg.window if local else None
        self.dropout = cfg.dropout
        self.q_proj = nn.Linear(cfg.d_model, self.n_heads * self.head_dim, bias=cfg.bias)
        self.k_proj = nn.Linear(cfg.d_model, self.n_kv_heads * self.head_dim, bias=cfg.bias)
        self.v_proj = nn.Linear(cfg.d_model, self.n_kv_heads * self.head_dim, bias=cfg.bias)
        self.o_proj = nn.Linear(self.n_heads * self.head_dim, cfg.d_model, bias=cfg.bias)
        if cfg.qk_norm:
            self.q_norm = NORM.build(cfg.norm, self.head_dim, cfg.norm_eps, cfg.bias)
            self.k_norm = NORM.build(cfg.norm, self.head_dim, cfg.norm_eps, cfg.bias)
        self.rope = POSITION.build(cfg.position, int(self.head_dim * cfg.rope_fraction), cfg, local)
        self.probe = None  # a `training.stability.AttentionProbe` on monitored steps only

    def new_cache(self, batch_size: int, max_len: int, dtype: torch.dtype, device: torch.device) -> LayerCache:
        shape = (batch_size, self.n_kv_heads, self.cached_slots(max_len), self.head_dim)
        return LayerCache(shape, shape, dtype=dtype, device=device)

    # accounting (the convention: workbench/accounting.py) -------------------------------------------------
    def cached_slots(self, context: int) -> int:
        """Tokens the cache holds at `context`: all of them, or the last `window` on a local layer."""
        return context if self.window is None else min(self.window, context)

    def kv_bytes_per_token(self, dtype: torch.dtype) -> int:
        return 2 * self.n_kv_heads * self.head_dim * dtype.itemsize  # K and V

    def pair_flops(self, tokens: int, start: int = 0) -> int:
        """QK^T and PV over the attended pairs: 2 x (head_dim + head_dim) per pair and query head."""
        return 2 * 2 * self.head_dim * self.n_heads * attended_pairs(tokens, self.window, start)

    def flops(self, tokens: int, start: int = 0) -> int:
        """Forward FLOPs of `tokens` new tokens after `start` cached ones: q, k, v, o projections plus `pair_flops`."""
        weights = sum(p.weight.numel() for p in (self.q_proj, self.k_proj, self.v_proj, self.o_proj))
        return 2 * tokens * weights + self.pair_flops(tokens, start)

    def forward(self, x: torch.Tensor, positions: torch.Tensor, cache: LayerCache | None = None) -> torch.Tensor:
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.n_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)
        if hasattr(self, "q_norm"):
            q, k = self.q_norm(q), self.k_norm(k)
        q, k = self.rope(q, k, positions)
        k_pos = positions
        if cache is not None:
            k, v, k_pos = cache.update(k, v)
        if self.probe is not None:
            self.probe(q, k, positions, k_pos, self.window, self.scale)
        dropout = self.dropout if self.training else 0.0
        out = self_attention(q, k, v, positions, k_pos, self.window, self.scale, self.softcap, dropout)
        return self.o_proj(out.transpose(1, 2).reshape(B, T, -1))
