"""Self-attention blocks, registered by name. `mha` covers multi-head, grouped-query and multi-query attention."""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention.flex_attention import AuxRequest

from workbench.blocks.documents import Documents
from workbench.blocks.fused import fuse_split_linears
from workbench.blocks.linear import Linear
from workbench.blocks.patterns import GLOBAL, LOCAL
from workbench.cache import LayerCache, SharedLayerCache
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
    sinks: torch.Tensor | None = None,
) -> torch.Tensor:
    """softmax(mask(cap(q k^T * scale))) v over (..., heads, T, dim); k/v heads shared by groups of query heads.

    mask None means plain causal attention with as many keys as queries. `sinks` (heads,): a learned logit per
    head that joins each row's softmax denominator and attends to nothing (gpt-oss), in float32 at least.
    """
    if softcap is None and sinks is None:
        return F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=dropout, scale=scale, is_causal=mask is None, enable_gqa=True
        )
    if mask is None:
        positions = torch.arange(q.shape[-2], device=q.device)
        mask = visible(positions, positions, None)
    groups = q.shape[-3] // k.shape[-3]
    k, v = k.repeat_interleave(groups, dim=-3), v.repeat_interleave(groups, dim=-3)
    scores = (q @ k.transpose(-2, -1)) * scale
    if softcap is not None:
        scores = softcap * torch.tanh(scores / softcap)
    scores = scores.masked_fill(~mask, float("-inf"))
    if sinks is None:
        probs = scores.softmax(dim=-1, dtype=torch.promote_types(scores.dtype, torch.float32))
    else:
        scores = scores.to(torch.promote_types(scores.dtype, torch.float32))
        lse = torch.logaddexp(scores.logsumexp(dim=-1, keepdim=True), sinks.to(scores.dtype).view(-1, 1, 1))
        probs = (scores - lse).exp()
    return F.dropout(probs.to(q.dtype), dropout) @ v


def local_block_size(window: int, dtype: torch.dtype = torch.float32) -> int:
    """Queries per block of the blocked window path, which attend the W + b keys ending with their block.

    W/4 (1.25 W keys per query rather than 2 W with blocks of W); W/2 where W/4 would be under 32 queries; else W,
    or in float32 its smallest multiple of at least 16 queries: below that the kernel's per-block cost outweighs
    the keys saved (forward + backward on CPU: W = 64 runs 15% faster in blocks of 32 than of 16; W = 4 and 8 run
    1.7x and 1.3x faster in blocks of 16 than of W). Not in bfloat16, whose CPU kernel runs blocks of 16 queries
    2.4x slower than blocks of W = 4.
    """
    for div in (4, 2):
        if window % div == 0 and window // div >= 32:
            return window // div
    return window * -(-16 // window) if dtype == torch.float32 else window


class _KeyBlocks(torch.autograd.Function):
    """(B, n * b, h, d) -> (B, n, W + b, h, d): block j holds keys jb - W .. jb + b - 1 (zeros before position 0).

    Overlapping windows of keys, copied once, in units of g = gcd(b, W) keys. `unfold` builds the same windows, but
    its backward (a generic scatter-add) and the zero-filled gradients of the copies around it took ~30% of the
    blocked path's time on CPU; here the backward adds the shifted slices of the gradient in place.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, block: int, window: int) -> torch.Tensor:
        B, T, h, d = x.shape
        g = math.gcd(block, window)
        u, w, n = block // g, window // g, T // block  # units per block, units looked back, blocks
        src = x.unflatten(1, (n * u, g))
        out = x.new_empty(B, n, w + u, g, h, d)
        for i in range(w + u):  # slot i of block j holds unit j * u + i - w
            first, start = _first_block(i - w, u)
            out[:, first:, i] = src[:, start::u][:, : n - first]
            out[:, :first, i] = 0
        ctx.units = g, u, w, n
        return out.flatten(2, 3)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        g, u, w, n = ctx.units
        grad = grad.unflatten(2, (w + u, g))
        dx = grad[:, :, w:].flatten(1, 2).clone()  # the block's own units: each unit once
        for i in range(w):
            first, start = _first_block(i - w, u)
            dx[:, start::u][:, : n - first] += grad[:, first:, i]
        return dx.flatten(1, 2), None, None


def _first_block(shift: int, units: int) -> tuple[int, int]:
    """The first block j whose unit j * units + shift exists (>= 0), and that unit."""
    first = -(shift // units) if shift < 0 else 0
    return first, first * units + shift


@functools.lru_cache(maxsize=8)
def _local_block_mask(batch: int, n: int, block: int, window: int, device: torch.device) -> torch.Tensor:
    """(batch * n, 1, b, W + b): query a of block j sees key c iff a < c <= a + W and c is no padding before 0.

    One mask per shape, shared by every local layer of a forward pass.
    """
    a = torch.arange(block, device=device)[:, None]
    c = torch.arange(window + block, device=device)[None, :]
    first_key = torch.arange(n, device=device)[:, None, None] * block - window  # position of key c = 0
    mask = (c > a) & (c <= a + window) & (first_key + c >= 0)
    return mask[:, None].repeat(batch, 1, 1, 1)


def attend_blocked_local(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    window: int,
    scale: float,
    softcap: float | None,
    dropout: float,
    sinks: torch.Tensor | None = None,
    documents: torch.Tensor | None = None,
) -> torch.Tensor:
    """Sliding-window attention in O(T * W): each block of b queries sees the W + b keys that end with its own block.

    Query jb + a sees key jb - W + c iff a < c <= a + W, which is exactly i - W < j <= i; keys before position 0
    are padding. b is `local_block_size(W, dtype)`. Blocks are folded into the batch so SDPA gets 4-D inputs: it has
    fused CPU/CUDA kernels for those only (5-D inputs fall back to the unfused math path, 2x slower forward on
    CPU). Inputs laid out (B, T, h, d) in memory, as the model's projections leave them, are blocked without a
    copy of the queries, and the output comes back in that layout. `documents` (B, T): each token's document id;
    a key is visible only from queries of its own document.
    """
    B, H, T, D = q.shape
    block = local_block_size(window, q.dtype)
    n = -(-T // block)
    pad = n * block - T

    def tokens_first(x: torch.Tensor) -> torch.Tensor:  # (B, h, T, d) -> (B, n * b, h, d), padded at the end
        x = x.transpose(1, 2)
        return F.pad(x, (0, 0, 0, 0, 0, pad)) if pad else x

    def key_blocks(x: torch.Tensor) -> torch.Tensor:  # (B, h, T, d) -> (B * n, h, W + b, d)
        return _KeyBlocks.apply(tokens_first(x), block, window).flatten(0, 1).transpose(1, 2)

    q_blocks = tokens_first(q).reshape(B * n, block, H, D).transpose(1, 2)
    mask = _local_block_mask(B, n, block, window, q.device)
    if documents is not None:  # padding (before 0, after T) is document -1: masked or seen by padding only
        key_docs = F.pad(documents, (window, pad), value=-1).unfold(1, window + block, block)  # (B, n, W + b)
        query_docs = F.pad(documents, (0, pad), value=-1).view(B, n, block)
        mask = mask & (query_docs[..., :, None] == key_docs[..., None, :]).flatten(0, 1)[:, None]
    out = attend(q_blocks, key_blocks(k), key_blocks(v), mask, scale, softcap, dropout, sinks)
    return out.transpose(1, 2).reshape(B, n * block, H, -1)[:, :T].transpose(1, 2)


@functools.cache
def _flex_kernel(device_type: str):
    from torch.nn.attention.flex_attention import flex_attention

    return flex_attention if device_type == "cpu" else torch.compile(flex_attention, dynamic=False)


def _visible_mod(window: int | None):
    def mask_mod(b, h, i, j):
        return (j <= i) & (j > i - window) if window is not None else j <= i

    return mask_mod


@functools.lru_cache(maxsize=8)
def _flex_block_mask(n: int, window: int | None, device: torch.device):
    """One block mask per (length, window), shared by every layer of that type in a forward pass."""
    from torch.nn.attention.flex_attention import create_block_mask

    return create_block_mask(_visible_mod(window), None, None, n, n, device=device)


def _flex_document_mask(documents: Documents, window: int | None):
    """A block mask for one batch's documents: causal (and windowed) within each document; blocks of queries and
    keys in different documents are skipped. Built once per forward pass and window (kept in `documents.masks`)."""
    from torch.nn.attention.flex_attention import create_block_mask

    key = ("flex", window)
    if key not in documents.masks:
        ids, visible_mod = documents.ids, _visible_mod(window)

        def mask_mod(b, h, i, j):
            return visible_mod(b, h, i, j) & (ids[b, i] == ids[b, j])

        B, T = ids.shape
        documents.masks[key] = create_block_mask(mask_mod, B, None, T, T, device=ids.device)
    return documents.masks[key]


def attend_flex(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    window: int | None,
    scale: float,
    softcap: float | None,
    sinks: torch.Tensor | None = None,
    documents: Documents | None = None,
) -> torch.Tensor:
    """`flex_attention` over a sequence with no cached keys: only the blocks the window touches are computed.

    flex_attention is no autocast op: q and k (float32 after a plain RMSNorm under bf16 autocast) take v's dtype,
    as SDPA's autocast casts them. Sinks: with Z the row's softmax denominator, a sink logit s turns each
    probability p into p Z / (Z + e^s), i.e. the output times sigmoid(log Z - s), from flex's log-sum-exp.
    """
    if documents is None:
        block_mask = _flex_block_mask(q.shape[-2], window, q.device)
    else:
        block_mask = _flex_document_mask(documents, window)
    flex = _flex_kernel(q.device.type)
    score_mod = _softcap_mod(softcap) if softcap else None
    aux = {} if sinks is None else {"return_aux": AuxRequest(lse=True)}
    out = flex(
        q.to(v.dtype), k.to(v.dtype), v, score_mod=score_mod, block_mask=block_mask, scale=scale, enable_gqa=True,
        **aux,
    )  # fmt: skip
    if sinks is None:
        return out
    out, lse = out[0], out[1].lse
    compute = torch.promote_types(lse.dtype, torch.float32)
    return out * torch.sigmoid(lse.to(compute) - sinks.to(compute).view(-1, 1))[..., None].to(out.dtype)


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
    sinks: torch.Tensor | None = None,
    documents: Documents | None = None,
) -> torch.Tensor:
    """Pick the attention path: `auto_kernel`'s choice without cached keys, the explicit mask otherwise.

    `attention_path` overrides the choice (dense: always the explicit mask; flex: `attend_flex` without cache).
    `sinks`: see `attend`. `documents`, only without cached keys: a query sees only keys of its own document, on
    every path (positions q_pos/k_pos are the window's own, 0..T-1; RoPE has already used the documents').
    """
    fresh = k.shape[-2] == q.shape[-2]
    if documents is not None and not fresh:
        raise ValueError("documents: a document mask applies to a forward pass without cached keys")
    if _path == "flex" and fresh:
        if dropout:
            raise ValueError(f"dropout: got {dropout}; allowed: 0 on the flex attention path")
        return attend_flex(q, k, v, window, scale, softcap, sinks, documents)
    # nothing cached before these tokens: keys are the queries' own positions
    if _path == "auto" and fresh:
        kernel = auto_kernel(q.device.type, q.shape[-2], window, softcap, dropout)
        if kernel == "flex":
            return attend_flex(q, k, v, window, scale, softcap, sinks, documents)
        if kernel == "causal" and documents is None:
            return attend(q, k, v, None, scale, softcap, dropout, sinks)
        if kernel == "blocked":
            ids = None if documents is None else documents.ids
            return attend_blocked_local(q, k, v, window, scale, softcap, dropout, sinks, ids)
    mask = visible(q_pos, k_pos, window)
    if documents is not None:
        mask = mask & (documents.ids[:, :, None] == documents.ids[:, None, :])[:, None]
    return attend(q, k, v, mask, scale, softcap, dropout, sinks)


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


# keys, values and key positions of the last layer of each type with its own, in this forward pass: what a KV-shared
# layer of that type attends over (with a cache: what that layer's cache returned, old tokens included)
SharedKV = dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]


@ATTENTION.register("mha")
class MultiHeadAttention(nn.Module):
    """GQA attention with optional QK-norm (after projection, before RoPE) and tanh logit soft-capping.

    `window` is None on global layers; on local layers it may be changed after training (`set_window`).
    Per layer type (Gemma 4): head width and KV heads (`cfg.head_dim_for`, `cfg.n_kv_heads_for`), the RoPE
    fraction, and keys that are also the values (K = V: the k projection's output, before the key's norm and
    RoPE, is the value; the cache holds that one tensor, and keys and values are derived from it when read). With
    `v_norm` the values are RMS-normalised without a scale. A layer built with `reuses_kv` has no k/v projections
    and no cache: it attends over the keys and values the last earlier layer of its type left in `shared`.

    The 2025-26 knobs: QK-norm over each head or over the whole projection (`qk_norm_scope`: Gemma 3 / OLMo 2-3);
    a learned sink logit per head (`attn_sinks`: gpt-oss); a sigmoid gate on the attention output computed from the
    layer input (`attn_gate`: Qwen3-Next), whose rows sit in q_proj interleaved per head ([query_h, gate_h] for
    each head h), the layout of Qwen3-Next's q_proj, so its weights copy as they are.
    """

    config_fields = frozenset({"head_dim_global", "n_kv_heads_global", "k_eq_v_global", "rope_fraction_global",
                               "v_norm", "kv_shared_layers", "qk_norm_scope", "attn_sinks",
                               "attn_gate"})  # fmt: skip

    def __init__(self, cfg: ModelConfig, local: bool, reuses_kv: bool = False) -> None:
        super().__init__()
        self.layer_type = LOCAL if local else GLOBAL
        self.n_heads = cfg.n_heads
        self.n_kv_heads, self.head_dim = cfg.n_kv_heads_for(self.layer_type), cfg.head_dim_for(self.layer_type)
        self.scale = cfg.attn_scale_for(self.layer_type)
        self.softcap = cfg.softcap
        self.window = cfg.window if local else None
        self.dropout = cfg.dropout
        self.reuses_kv = reuses_kv
        # tensors per cached token: K and V, or one where K = V (a reusing layer reads those of its source)
        self.kv_tensors = 1 if cfg.k_eq_v_for(self.layer_type) else 2
        # the projections this layer owns, in the rows of `qkv_proj`: q, then k and v (k alone if K = V; neither
        # when reusing): one matmul instead of several
        self.parts = ("q_proj", "k_proj", "v_proj")[: 1 + (0 if reuses_kv else self.kv_tensors)]
        kv_rows = (len(self.parts) - 1) * self.n_kv_heads
        self.gate_width = {"none": 0, "headwise": 1, "elementwise": self.head_dim}[cfg.attn_gate]
        q_rows = self.n_heads * (self.head_dim + self.gate_width)
        self.qkv_proj = Linear(cfg.d_model, q_rows + kv_rows * self.head_dim, bias=cfg.bias)
        self.o_proj = Linear(self.n_heads * self.head_dim, cfg.d_model, bias=cfg.bias)
        self.projection_norm = cfg.qk_norm_scope == "projection"
        if cfg.qk_norm:
            q_width, k_width = (self.n_heads, self.n_kv_heads) if self.projection_norm else (1, 1)
            self.q_norm = NORM.build(cfg.norm, q_width * self.head_dim, cfg.norm_eps, cfg.bias)
            if not reuses_kv:
                self.k_norm = NORM.build(cfg.norm, k_width * self.head_dim, cfg.norm_eps, cfg.bias)
        if cfg.attn_sinks:  # 0 at init: the sink weighs like one key of logit 0 (a 1-D weight: never decayed)
            self.sinks = nn.Parameter(torch.zeros(self.n_heads))
        if cfg.v_norm and not reuses_kv:
            self.v_norm = NORM.build("rmsnorm_unscaled", self.head_dim, cfg.norm_eps, cfg.bias)
        rot_dim = int(self.head_dim * cfg.rope_fraction_for(self.layer_type))
        self.rope = POSITION.build(cfg.position, rot_dim, cfg, local, head_dim=self.head_dim)
        self.probe = None  # a `workbench.probes.AttentionProbe` on monitored steps only

    def new_cache(
        self, batch_size: int, max_len: int, dtype: torch.dtype, device: torch.device
    ) -> LayerCache | SharedLayerCache:
        if self.reuses_kv:
            return SharedLayerCache()
        shape = (batch_size, self.n_kv_heads, self.cached_slots(max_len), self.head_dim)
        return LayerCache(shape, shape if self.kv_tensors == 2 else None, dtype=dtype, device=device)

    # accounting (the convention: workbench/accounting.py) -------------------------------------------------
    def cached_slots(self, context: int) -> int:
        """Tokens the cache holds at `context`: all of them, the last `window` on a local layer, none when reusing."""
        if self.reuses_kv:
            return 0
        return context if self.window is None else min(self.window, context)

    def kv_bytes_per_token(self, dtype: torch.dtype) -> int:
        """Bytes of the cached keys and values per token this layer attends over (its own, or its source's)."""
        return self.kv_tensors * self.n_kv_heads * self.head_dim * dtype.itemsize

    def pair_flops(self, tokens: int, start: int = 0) -> int:
        """QK^T and PV over the attended pairs: 2 x (head_dim + head_dim) per pair and query head."""
        return 2 * 2 * self.head_dim * self.n_heads * attended_pairs(tokens, self.window, start)

    def flops(self, tokens: int, start: int = 0) -> int:
        """Forward FLOPs of `tokens` new tokens after `start` cached ones: the projections plus `pair_flops`."""
        weights = self.qkv_proj.weight.numel() + self.o_proj.weight.numel()
        return 2 * tokens * weights + self.pair_flops(tokens, start)

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        fuse_split_linears(state_dict, prefix, "qkv_proj", self.parts)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(
        self,
        x: torch.Tensor,
        positions: torch.Tensor,
        cache: LayerCache | None = None,
        shared: SharedKV | None = None,
        documents: Documents | None = None,
    ) -> torch.Tensor:
        """`shared`: this forward pass's keys and values by layer type, read when reusing and written otherwise.
        `documents`: a packed window's documents (no cache): attention stays inside each, RoPE as they say."""
        B, T, _ = x.shape
        qkv, gate = self._project(x)
        rope_pos = positions if documents is None else documents.rope_positions(positions)
        if self.reuses_kv:
            q, (k, v, k_pos) = qkv, shared[self.layer_type]
            q = self.rope.rotate(self._normed(self.q_norm, q) if hasattr(self, "q_norm") else q, rope_pos)
        else:
            q, k, v, k_pos = self._own_kv(qkv, positions, rope_pos, cache)
            if shared is not None:
                shared[self.layer_type] = k, v, k_pos
        if self.probe is not None:
            doc_ids = () if documents is None else (documents.ids,)
            self.probe(q, k, positions, k_pos, self.window, self.scale, *doc_ids)
        dropout = self.dropout if self.training else 0.0
        extra = {"sinks": self.sinks} if hasattr(self, "sinks") else {}  # the plain call when neither knob is on
        if documents is not None:
            extra["documents"] = documents
        out = self_attention(q, k, v, positions, k_pos, self.window, self.scale, self.softcap, dropout, **extra)
        out = out.transpose(1, 2)  # (B, T, h, d)
        if gate is not None:
            out = out * torch.sigmoid(gate)
        return self.o_proj(out.reshape(B, T, -1))

    def _project(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(B, h, T, d) heads of q, k, v (views of a (B, T, h, d) tensor), and the output gate (B, T, H, 1 or d)."""
        B, T, _ = x.shape
        y = self.qkv_proj(x)
        if not self.gate_width:
            return y.view(B, T, -1, self.head_dim).transpose(1, 2), None
        q_rows = self.n_heads * (self.head_dim + self.gate_width)
        q, gate = y[..., :q_rows].view(B, T, self.n_heads, -1).split((self.head_dim, self.gate_width), dim=-1)
        heads = torch.cat((q, y[..., q_rows:].view(B, T, -1, self.head_dim)), dim=2)
        return heads.transpose(1, 2), gate

    def _normed(self, norm: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """QK-norm of (B, h, T, d) heads: over each head's d dims, or over all h * d of a token (`projection`)."""
        if not self.projection_norm:
            return norm(x)
        B, h, T, d = x.shape
        return norm(x.transpose(1, 2).reshape(B, T, h * d)).view(B, T, h, d).transpose(1, 2)

    def _own_kv(
        self, qkv: torch.Tensor, positions: torch.Tensor, rope_pos: torch.Tensor, cache: LayerCache | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Queries, and the keys, values and key positions of this layer's own projections (and its cache).

        `rope_pos`: the positions RoPE rotates by (`positions`, or per document); keys of a cache are at `k_pos`."""
        if self.kv_tensors == 2:
            q, k, v = qkv.split((self.n_heads, self.n_kv_heads, self.n_kv_heads), dim=1)
            if hasattr(self, "q_norm"):
                q, k = self._normed(self.q_norm, q), self._normed(self.k_norm, k)
            if hasattr(self, "v_norm"):
                v = self.v_norm(v)
            q, k = self.rope(q, k, rope_pos)
            if cache is None:
                return q, k, v, positions
            return q, *cache.update(k, v)
        q, raw = qkv.split((self.n_heads, self.n_kv_heads), dim=1)  # K = V: the k projection, before norm and RoPE
        k_pos, k_rope_pos = positions, rope_pos
        if cache is not None:
            raw, _, k_pos = cache.update(raw)
            k_rope_pos = k_pos
        if hasattr(self, "q_norm"):
            q = self._normed(self.q_norm, q)
        k = self.rope.rotate(self._normed(self.k_norm, raw) if hasattr(self, "k_norm") else raw, k_rope_pos)
        return self.rope.rotate(q, rope_pos), k, self.v_norm(raw) if hasattr(self, "v_norm") else raw, k_pos
