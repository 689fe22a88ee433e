"""Checks of `workbench.accounting` against a real model: its tensors, its allocated cache, and fvcore's FLOP count.

fvcore counts one multiply-add as one flop; `fvcore_flops` doubles it. Its default attention handles cannot
read masks, so an eager pass records the attended (query, key) pairs of every attention call, and the handles
count those pairs only: the convention of `workbench.accounting`. Norms are outside that convention (fvcore
would count `layer_norm`), so they count 0 here as they do there.
"""

from __future__ import annotations

import math
import warnings

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from workbench.accounting import DTYPES, forward_flops, kv_cache_bytes_per_layer, param_counts
from workbench.config import ModelConfig
from workbench.model import Transformer


class _AttentionRecorder(TorchFunctionMode):
    """Runs the model once and records, per attention call in order, the multiply-adds over attended pairs.

    fvcore traces a graph without tensor values, so its handles cannot read the masks; this eager pass can.
    SDPA calls record q's shape and MACs; the soft-cap path records attended entries of each masked score tensor.
    """

    def __init__(self) -> None:
        super().__init__()
        self.sdpa: list[tuple[list[int], int]] = []
        self.scores: list[int] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.scaled_dot_product_attention:
            self.sdpa.append(_sdpa_macs(*args, **kwargs))
        elif func is torch.Tensor.masked_fill and args[0].dim() == 4 and args[2] == -math.inf:
            self.scores.append(int(args[0].numel() - args[1].expand(args[0].shape).sum()))
        return func(*args, **kwargs)


def _sdpa_macs(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, **_) -> tuple[list[int], int]:
    *batch, tq, e = q.shape
    tk, ev = k.shape[-2], v.shape[-1]
    if attn_mask is None:
        attn_mask = torch.ones(tq, tk, dtype=torch.bool).tril() if is_causal else torch.ones(tq, tk, dtype=torch.bool)
    elif attn_mask.dtype != torch.bool:
        attn_mask = attn_mask > -math.inf
    pairs = int(attn_mask.expand(*batch, tq, tk).sum())
    return list(q.shape), pairs * (e + ev)


def fvcore_flops(model: torch.nn.Module, input_ids: torch.Tensor) -> dict[str, int]:
    """FLOPs per module name ('' is the total) of one forward pass, counted by fvcore (x2 for FLOPs per MAC)."""
    with warnings.catch_warnings():  # fvcore's import-time torch.jit.script calls warn of a deprecation
        warnings.simplefilter("ignore", DeprecationWarning)
        from fvcore.nn import FlopCountAnalysis
        from fvcore.nn.jit_handles import get_shape, matmul_flop_jit

    with torch.no_grad(), _AttentionRecorder() as rec:
        model(input_ids)
    sdpa, scores, n_attn_matmuls = iter(rec.sdpa), rec.scores, 0

    def sdpa_handle(inputs, outputs) -> int:
        shape, macs = next(sdpa)
        if get_shape(inputs[0]) != shape:
            raise RuntimeError(f"fvcore graph and eager pass disagree: query shape {get_shape(inputs[0])} vs {shape}")
        return macs

    def matmul_handle(inputs, outputs) -> int:
        """4-D matmuls are the soft-cap path's QK^T (even calls) and PV (odd calls); others as fvcore counts."""
        nonlocal n_attn_matmuls
        a, b = get_shape(inputs[0]), get_shape(inputs[1])
        if len(a) != 4 or len(b) != 4:
            return matmul_flop_jit(inputs, outputs)
        attended = scores[n_attn_matmuls // 2]
        inner = a[-1] if n_attn_matmuls % 2 == 0 else b[-1]
        n_attn_matmuls += 1
        return attended * inner

    analysis = FlopCountAnalysis(model, input_ids).set_op_handle(
        "aten::scaled_dot_product_attention",
        sdpa_handle,
        "aten::matmul",
        matmul_handle,
        "aten::layer_norm",
        lambda *_: 0,
    )
    analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    return {name: 2 * int(macs) for name, macs in analysis.by_module().items()}


def check_accounting(cfg: ModelConfig, model: Transformer, tokens: int = 11, context: int = 9) -> None:
    """The accounting of `cfg` equals what `model` (built from it) has, allocates and computes.

    Parameters: its tensors; KV bytes: a cache it allocates for `context` tokens, per layer; forward FLOPs of
    `tokens` tokens, per block and in all: fvcore's count.
    """
    counts = param_counts(cfg)
    assert counts["total"] == sum(p.numel() for p in model.parameters())
    head = 0 if model.lm_head is None else model.lm_head.weight.numel()
    assert counts["embedding"] == model.embed.weight.numel() + head
    for batch, dtype in ((1, "float32"), (2, "bfloat16")):
        cache = model.new_cache(batch, context, dtype=DTYPES[dtype])
        assert kv_cache_bytes_per_layer(cfg, context, batch, dtype) == [layer.nbytes for layer in cache.layers]
    batch = 2
    counted = fvcore_flops(model.eval(), torch.randint(0, cfg.vocab_size, (batch, tokens)))
    assert counted[""] == batch * forward_flops(cfg, tokens)
    for i, block in enumerate(model.blocks):
        assert counted[f"blocks.{i}.attn"] == batch * block.attn.flops(tokens), i
        for part in ("mlp", "moe", "ple"):  # the MoE block and the per-layer input gate, where the config has them
            if getattr(block, part, None) is not None:
                assert counted[f"blocks.{i}.{part}"] == batch * getattr(block, part).flops(tokens), (i, part)
    if getattr(model, "ple", None) is not None:
        assert counted["ple"] == batch * model.ple.flops(tokens)
