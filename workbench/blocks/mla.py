"""Multi-head latent attention (DeepSeek-V2): keys and values rebuilt from a small cached latent.

Each token caches only its normalised latent c (mla_latent_dim) and one RoPE key shared by all heads
(mla_rope_dim). Per head, keys are [W_uk c, rope(k_r)] and values W_uv c; queries are [q_nope, rope(q_rope)].
With QK-norm on, the norm applies to the non-rotary parts of queries and keys.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from workbench.blocks.attention import attended_pairs, self_attention
from workbench.blocks.documents import Documents
from workbench.blocks.linear import Linear
from workbench.cache import LayerCache
from workbench.registry import ATTENTION, NORM, POSITION

if TYPE_CHECKING:
    from workbench.config import ModelConfig


@ATTENTION.register("mla")
class MultiHeadLatentAttention(nn.Module):
    def __init__(self, cfg: ModelConfig, local: bool) -> None:
        super().__init__()
        self.n_heads, self.head_dim = cfg.n_heads, cfg.resolved_head_dim
        self.latent_dim, self.rope_dim = cfg.mla_latent_dim, cfg.mla_rope_dim
        scalar = cfg.query_pre_attn_scalar or self.head_dim + self.rope_dim
        self.scale = scalar**-0.5
        self.softcap = cfg.softcap
        self.window = cfg.window if local else None
        self.dropout = cfg.dropout
        self.q_proj = Linear(cfg.d_model, self.n_heads * (self.head_dim + self.rope_dim), bias=cfg.bias)
        self.kv_down = Linear(cfg.d_model, self.latent_dim, bias=cfg.bias)
        self.kv_norm = NORM.build(cfg.norm, self.latent_dim, cfg.norm_eps, cfg.bias)
        self.k_rope_proj = Linear(cfg.d_model, self.rope_dim, bias=cfg.bias)
        self.k_up = Linear(self.latent_dim, self.n_heads * self.head_dim, bias=cfg.bias)
        self.v_up = Linear(self.latent_dim, self.n_heads * self.head_dim, bias=cfg.bias)
        self.o_proj = Linear(self.n_heads * self.head_dim, cfg.d_model, bias=cfg.bias)
        if cfg.qk_norm:
            self.q_norm = NORM.build(cfg.norm, self.head_dim, cfg.norm_eps, cfg.bias)
            self.k_norm = NORM.build(cfg.norm, self.head_dim, cfg.norm_eps, cfg.bias)
        self.rope = POSITION.build(cfg.position, self.rope_dim, cfg, local)
        self.probe = None  # a `workbench.probes.AttentionProbe` on monitored steps only

    def new_cache(self, batch_size: int, max_len: int, dtype: torch.dtype, device: torch.device) -> LayerCache:
        slots = self.cached_slots(max_len)
        latent, rope_key = (batch_size, 1, slots, self.latent_dim), (batch_size, 1, slots, self.rope_dim)
        return LayerCache(latent, rope_key, dtype=dtype, device=device)

    # accounting (the convention: workbench/accounting.py) -------------------------------------------------
    def cached_slots(self, context: int) -> int:
        """Tokens the cache holds at `context`: all of them, or the last `window` on a local layer."""
        return context if self.window is None else min(self.window, context)

    def kv_bytes_per_token(self, dtype: torch.dtype) -> int:
        return (self.latent_dim + self.rope_dim) * dtype.itemsize  # the latent and the shared RoPE key

    def pair_flops(self, tokens: int, start: int = 0) -> int:
        """QK^T over head_dim + rope_dim and PV over head_dim, per attended pair and head."""
        return 2 * (2 * self.head_dim + self.rope_dim) * self.n_heads * attended_pairs(tokens, self.window, start)

    def flops(self, tokens: int, start: int = 0) -> int:
        """Forward FLOPs of `tokens` new tokens after `start` cached ones, plus `pair_flops`.

        The new tokens' projections (q, latent, RoPE key, output), and the k/v up-projections of every key
        the pass sees: the cached latents are expanded again on every pass.
        """
        weights = sum(p.weight.numel() for p in (self.q_proj, self.kv_down, self.k_rope_proj, self.o_proj))
        keys = tokens + self.cached_slots(start)
        up = self.k_up.weight.numel() + self.v_up.weight.numel()
        return 2 * tokens * weights + 2 * keys * up + self.pair_flops(tokens, start)

    def forward(
        self,
        x: torch.Tensor,
        positions: torch.Tensor,
        cache: LayerCache | None = None,
        documents: Documents | None = None,
    ) -> torch.Tensor:
        """`documents`: a packed window's documents (no cache): attention stays inside each, RoPE as they say."""
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.n_heads, -1).transpose(1, 2)
        q_nope, q_rope = q.split((self.head_dim, self.rope_dim), dim=-1)
        latent = self.kv_norm(self.kv_down(x)).unsqueeze(1)  # (B, 1, T, latent)
        k_rope = self.k_rope_proj(x).unsqueeze(1)  # (B, 1, T, rope_dim): one RoPE key shared by all heads
        rope_pos = positions if documents is None else documents.rope_positions(positions)
        q_rope, k_rope = self.rope(q_rope, k_rope, rope_pos)
        k_pos = positions
        if cache is not None:
            latent, k_rope, k_pos = cache.update(latent, k_rope)
        Tk = latent.shape[2]
        k_nope = self.k_up(latent[:, 0]).view(B, Tk, self.n_heads, self.head_dim).transpose(1, 2)
        v = self.v_up(latent[:, 0]).view(B, Tk, self.n_heads, self.head_dim).transpose(1, 2)
        if hasattr(self, "q_norm"):
            q_nope, k_nope = self.q_norm(q_nope), self.k_norm(k_nope)
        q = torch.cat((q_nope, q_rope), dim=-1)
        k = torch.cat((k_nope, k_rope.expand(B, self.n_heads, Tk, self.rope_dim)), dim=-1)
        if self.probe is not None:
            doc_ids = () if documents is None else (documents.ids,)
            self.probe(q, k, positions, k_pos, self.window, self.scale, *doc_ids)
        dropout = self.dropout if self.training else 0.0
        masked = {} if documents is None else {"documents": documents}
        out = self_attention(q, k, v, positions, k_pos, self.window, self.scale, self.softcap, dropout, **masked)
        return self.o_proj(out.transpose(1, 2).reshape(B, T, -1))
