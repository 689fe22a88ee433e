"""The model's own accounting: parameters, KV-cache bytes and FLOPs, read from a model built on the meta device.

Every number comes from the blocks themselves, so a new registered variant is counted as it is built:
- parameters: the built tensors (`embedding` is the token embedding plus an untied output head; the rest is
  `non_embedding`);
- KV cache: each attention layer's `kv_bytes_per_token(dtype)` x `cached_slots(context)`;
- FLOPs: each attention and MLP block's `flops(tokens, ...)` (`Transformer.flops` sums them and adds the LM head).
`workbench.registry` refuses to build an attention or MLP kind without these methods. Norms and position
encodings are elementwise: their parameters count, they add no FLOPs and cache nothing.

The FLOP convention, the one the whole project uses (MFU, the dry run, `analysis.flops`): only matmuls count, at
2 FLOPs per multiply-add (norms, RoPE, activations, softmax, caps and bias adds are left out). Attention costs
its QK^T and PV over the (query, key) pairs actually attended, counted exactly: Σ_i min(i+1, W) pairs per head
on a local layer of window W, Σ_i (i+1) on a global one. The LM head runs at every position. Training is
forward + backward = 3 x forward.

Document masking (`data.document_mask`) is left out: the accounting is a property of the config, while the pairs a
window attends under the mask depend on where its documents end. Every window counts as one document, an upper
bound on the pairs attended (the CPU kernels compute the masked pairs anyway; flex on CUDA skips only whole blocks).
Attention sinks add a parameter per head and no matmul; an output gate adds its rows to q_proj (counted with it)
and an elementwise product (not counted); QK-norm over the projection is a norm (parameters only).
"""

from __future__ import annotations

import functools

import torch

from workbench.blocks.attention import attended_pairs
from workbench.config import ModelConfig
from workbench.model import Transformer, build_model

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "float8": torch.float8_e4m3fn}
EMBEDDING = ("embed.", "lm_head.")  # parameter names counted as embedding


@functools.lru_cache(maxsize=64)
def meta_model(cfg: ModelConfig) -> Transformer:
    """The model `cfg` describes, on the meta device (shapes, no memory), built once per config: read, never modify."""
    with torch.device("meta"):
        return build_model(cfg)


def param_counts(cfg: ModelConfig) -> dict[str, int]:
    """{"embedding", "non_embedding", "total"} parameters; a tied embedding is counted once."""
    named = dict(meta_model(cfg).named_parameters())
    total = sum(p.numel() for p in named.values())
    embedding = sum(p.numel() for name, p in named.items() if name.startswith(EMBEDDING))
    return {"embedding": embedding, "non_embedding": total - embedding, "total": total}


def dtype_of(name: str) -> torch.dtype:
    if name not in DTYPES:
        raise ValueError(f"dtype: got {name!r}; allowed: {', '.join(DTYPES)}")
    return DTYPES[name]


def kv_cache_bytes_per_layer(
    cfg: ModelConfig, context_len: int, batch_size: int = 1, dtype: str = "bfloat16", window: int | None = None
) -> list[int]:
    """Bytes each layer's cache holds for `batch_size` sequences of `context_len` tokens (window: override cfg's)."""
    if context_len < 1 or batch_size < 1:
        raise ValueError(f"context_len and batch_size: got {context_len}, {batch_size}; allowed: values >= 1")
    item = dtype_of(dtype)
    model = meta_model(cfg if window is None else cfg.replace(window=window))
    return [b.attn.kv_bytes_per_token(item) * b.attn.cached_slots(context_len) * batch_size for b in model.blocks]


def kv_cache_bytes(
    cfg: ModelConfig, context_len: int, batch_size: int = 1, dtype: str = "bfloat16", window: int | None = None
) -> int:
    """Bytes of the KV cache for `batch_size` sequences of `context_len` tokens (window: override cfg.window)."""
    return sum(kv_cache_bytes_per_layer(cfg, context_len, batch_size, dtype, window))


def kv_bytes_read_per_token(cfg: ModelConfig, context: int, dtype: str = "bfloat16") -> int:
    """KV bytes one decoded token reads with `context` tokens cached: the keys and values of every token it attends.

    Its own included (a decode kernel appends it to the cache first), so a local layer reads at most `window`
    tokens and a global layer context + 1: the decode step's attended pairs, as `forward_flops(cfg, 1, context)`.
    """
    if context < 0:
        raise ValueError(f"context: got {context}; allowed: a value >= 0")
    item = dtype_of(dtype)
    blocks = meta_model(cfg).blocks
    return sum(b.attn.kv_bytes_per_token(item) * attended_pairs(1, b.attn.window, context) for b in blocks)


def forward_flops(cfg: ModelConfig, tokens: int, start: int = 0) -> int:
    """Forward FLOPs of one sequence: `tokens` new tokens after `start` cached ones (prefill: start=0)."""
    return meta_model(cfg).flops(tokens, start)


def training_flops(cfg: ModelConfig, seq_len: int) -> int:
    """Forward + backward FLOPs of one sequence of `seq_len` tokens: 3 x forward."""
    return 3 * forward_flops(cfg, seq_len)


def generation_flops(cfg: ModelConfig, prompt_len: int, new_tokens: int) -> int:
    """Forward FLOPs of `workbench.generate.generate` for one sequence: the prompt's prefill, then one cached
    decode step per sampled token but the last (its logits are never needed). Divided by `new_tokens`: the
    decode FLOPs per sampled token."""
    if prompt_len < 1 or new_tokens < 0:
        raise ValueError(f"prompt_len, new_tokens: got {prompt_len}, {new_tokens}; allowed: >= 1, >= 0")
    if new_tokens == 0:
        return 0
    decode = range(prompt_len, prompt_len + new_tokens - 1)
    return forward_flops(cfg, prompt_len) + sum(forward_flops(cfg, 1, start) for start in decode)


def on_policy_row_flops(cfg: ModelConfig, prompt_len: int, new_tokens: int) -> int:
    """The student's FLOPs for one on-policy distillation row: sampling `new_tokens` after the prompt, then
    forward + backward over the prompt_len + new_tokens - 1 inputs that score them (`workbench.on_policy`)."""
    return generation_flops(cfg, prompt_len, new_tokens) + training_flops(cfg, prompt_len + new_tokens - 1)


def iso_flop_steps(flops: float, model: ModelConfig, batch_size: int, seq_len: int) -> int:
    """Optimiser steps of `batch_size` sequences of `seq_len` tokens at which `model` spends `flops` training
    FLOPs, counted as MFU and the dry run count them (`training_flops`: attended pairs, 3 x forward), rounded
    to a whole step and at least one."""
    return max(1, round(float(flops) / (batch_size * training_flops(model, seq_len))))
