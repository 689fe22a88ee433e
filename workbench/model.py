"""The transformer: embedding, a stack of blocks read from `ModelConfig`, final norm, tied or untied head.

Every choice (attention kind, MLP kind, norm kind and placement, position encoding, local/global pattern, and
Gemma 4's per-layer inputs, MoE block, KV sharing and layer scalar) is a config value, the blocks looked up in
`workbench.registry` or built from `workbench.blocks`; nothing here branches on a model name.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from workbench import blocks  # noqa: F401  (fills the registries)
from workbench.blocks.attention import SharedKV
from workbench.blocks.documents import Documents
from workbench.blocks.linear import Linear, linear
from workbench.blocks.moe import MoEBlock
from workbench.blocks.norms import set_gain
from workbench.blocks.patterns import LOCAL
from workbench.blocks.ple import PerLayerInputGate, PerLayerInputs
from workbench.cache import KVCache, LayerCache, SharedLayerCache
from workbench.config import ModelConfig
from workbench.registry import ATTENTION, MLP, NORM


class Block(nn.Module):
    """Attention then MLP, each wrapped by the configured norm placement.

    pre:      x = x + f(norm(x))
    post:     x = norm(x + f(x))                  (classic post-LN)
    sandwich: x = x + post_norm(f(pre_norm(x)))   (Gemma 2/3)
    reordered: x = x + post_norm(f(x))           (OLMo 2/3)
    Gemma 4 adds, where the config says: the MoE block beside the MLP (it merges its routed branch into the MLP's
    output, see `MoEBlock`), then the layer's per-layer input (`PerLayerInputGate`), then the output times the
    stored `layer_scalar`. Layer `index` reuses an earlier layer's KV when `cfg.kv_shared(index)`.
    """

    def __init__(self, cfg: ModelConfig, index: int) -> None:
        super().__init__()
        self.placement = cfg.norm_placement
        self.layer_type = cfg.layer_types[index]
        reuse = {"reuses_kv": True} if cfg.kv_shared(index) else {}  # only kinds that read kv_shared_layers get it
        self.attn = ATTENTION.build(cfg.attention_for(self.layer_type), cfg, local=self.layer_type == LOCAL, **reuse)
        self.exchanges_kv = self.layer_type in cfg.kv_shared_types  # writes (or reads) this pass's shared KV
        self.mlp = MLP.build(cfg.mlp, cfg.d_model, cfg.mlp_hidden_for(index), cfg.bias)
        self.moe = MoEBlock(cfg) if cfg.moe_experts else None
        self.ple = PerLayerInputGate(cfg) if cfg.ple_dim else None
        if cfg.layer_scalar:
            self.register_buffer("layer_scalar", torch.ones(1))
        norm = lambda: NORM.build(cfg.norm, cfg.d_model, cfg.norm_eps, cfg.bias)  # noqa: E731
        if self.placement in ("pre", "sandwich"):
            self.attn_pre_norm, self.mlp_pre_norm = norm(), norm()
        if self.placement in ("post", "sandwich", "reordered"):
            self.attn_post_norm, self.mlp_post_norm = norm(), norm()
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(
        self,
        x: torch.Tensor,
        positions: torch.Tensor,
        cache: LayerCache | SharedLayerCache | None = None,
        per_layer_input: torch.Tensor | None = None,
        shared: SharedKV | None = None,
        documents: Documents | None = None,
    ) -> torch.Tensor:
        kv = (shared,) if self.exchanges_kv else ()
        docs = {} if documents is None else {"documents": documents}  # only kinds that read documents get them
        x = self._residual(x, lambda h: self.attn(h, positions, cache, *kv, **docs), "attn")
        x = self._residual(x, lambda h, x=x: self._feed_forward(x, h), "mlp")
        if self.ple is not None:
            x = self.ple(x, per_layer_input)
        return x * self.layer_scalar if hasattr(self, "layer_scalar") else x

    def _feed_forward(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """The MLP on h (x after the pre-norm, if any), and the MoE block's branch on x itself."""
        out = self.mlp(h)
        return out if self.moe is None else self.moe(x, out)

    def flops(self, tokens: int, start: int = 0) -> int:
        """Forward FLOPs of `tokens` new tokens after `start` cached ones (norms are elementwise: not counted)."""
        extra = sum(m.flops(tokens) for m in (self.moe, self.ple) if m is not None)
        return self.attn.flops(tokens, start) + self.mlp.flops(tokens) + extra

    def _residual(self, x: torch.Tensor, f, name: str) -> torch.Tensor:
        if self.placement == "post":
            return getattr(self, f"{name}_post_norm")(x + self.dropout(f(x)))
        if self.placement == "reordered":
            return x + self.dropout(getattr(self, f"{name}_post_norm")(f(x)))
        h = f(getattr(self, f"{name}_pre_norm")(x))
        if self.placement == "sandwich":
            h = getattr(self, f"{name}_post_norm")(h)
        return x + self.dropout(h)


class Transformer(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.blocks = nn.ModuleList(Block(cfg, i) for i in range(cfg.n_layers))
        self.ple = PerLayerInputs(cfg) if cfg.ple_dim else None
        # post-LN already ends every block with a norm; the other placements need a final one
        self.final_norm = (
            nn.Identity() if cfg.norm_placement == "post" else NORM.build(cfg.norm, cfg.d_model, cfg.norm_eps, cfg.bias)
        )
        self.lm_head = None if cfg.tie_embeddings else Linear(cfg.d_model, cfg.vocab_size, bias=False)
        self.register_buffer("embed_multiplier", torch.tensor(math.sqrt(cfg.d_model)), persistent=False)
        self.logit_probe = None  # a `workbench.probes.LogitProbe` on monitored steps only
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Normal(0, init_std) weights (embedding tables and experts too); output projections (experts' included)
        scaled by 1/sqrt(2 n_layers) (GPT-2); norms at identity, as in the reference Gemma and OLMo code, except
        the post-norms where `cfg.post_norm_init` sets their gain (`cfg.post_norm_gain`); router scales at 1."""
        std = self.cfg.init_std
        for name, p in self.named_parameters():
            if p.dim() < 2:
                continue  # norm weights and biases keep the initialisation of their module
            output = name.endswith(("o_proj.weight", "down_proj.weight", "experts.down_proj"))
            scale = 1 / math.sqrt(2 * self.cfg.n_layers) if output else 1
            nn.init.normal_(p, mean=0.0, std=std * scale)
        for m in self.modules():
            if isinstance(m, nn.Linear) and m.bias is not None:
                nn.init.zeros_(m.bias)
        if (gain := self.cfg.post_norm_gain) != 1.0:
            for block in self.blocks:
                for name in ("attn_post_norm", "mlp_post_norm"):
                    if hasattr(getattr(block, name, None), "weight"):  # a scale-free norm has no gain to set
                        set_gain(getattr(block, name), gain)

    def new_cache(self, batch_size: int, max_len: int, dtype: torch.dtype | None = None) -> KVCache:
        """An empty KV cache for `batch_size` sequences of up to `max_len` tokens, sized for the current windows."""
        dtype = dtype or self.embed.weight.dtype
        device = self.embed.weight.device
        return KVCache([b.attn.new_cache(batch_size, max_len, dtype, device) for b in self.blocks], max_len)

    def set_window(self, window: int) -> Transformer:
        """Change the sliding window of every local layer, e.g. evaluate at a smaller window than trained.

        Gemma 2 (Table 10) trains with 4096 and evaluates at 2048 or 1024 at a small perplexity cost. Logits change
        only at positions >= the new window; caches allocated afterwards are smaller (`new_cache`), and a cache
        allocated before a larger window is rejected by the forward pass. Returns the model, whose `cfg` now says
        the new window, so what reads the config (accounting, checkpoints, `to_hf`) sees the model as it runs.
        """
        if window < 1:
            raise ValueError(f"window: got {window}; allowed: a value >= 1")
        for block in self.blocks:
            if block.attn.window is not None:
                block.attn.window = window
        self.cfg = self.cfg.replace(window=window)
        return self

    def flops(self, tokens: int, start: int = 0) -> int:
        """Forward FLOPs of `tokens` new tokens after `start` cached ones: the blocks, then the LM head at every
        position. The convention is stated once, in workbench/accounting.py.
        """
        head = self.embed.weight if self.lm_head is None else self.lm_head.weight
        ple = 0 if self.ple is None else self.ple.flops(tokens)
        return sum(block.flops(tokens, start) for block in self.blocks) + ple + 2 * tokens * head.numel()

    def forward(
        self, input_ids: torch.Tensor, cache: KVCache | None = None, documents: Documents | None = None
    ) -> torch.Tensor:
        """input_ids (B, T) -> logits (B, T, vocab). With a cache, positions continue from what it holds.

        `documents`: the documents packed in each row (`Documents.from_separators`): each token attends only to
        earlier tokens of its own document, on every layer; not with a cache (decoding is one document)."""
        start = 0
        if documents is not None and cache is not None:
            raise ValueError("documents: a document mask is for a forward pass without a KV cache")
        if cache is not None:
            cache.check(input_ids.shape[1], [b.attn.window for b in self.blocks])
            start = cache.length
        positions = torch.arange(start, start + input_ids.shape[1], device=input_ids.device)
        x = self.embed(input_ids)
        if self.cfg.embed_scale:
            x = x * self.embed_multiplier.to(x.dtype)
        per_layer = None if self.ple is None else self.ple(input_ids, x)
        shared: SharedKV = {}
        for i, block in enumerate(self.blocks):
            layer_input = None if per_layer is None else per_layer[:, :, i]
            x = block(x, positions, cache.layers[i] if cache is not None else None, layer_input, shared, documents)
        x = self.final_norm(x)
        logits = linear(x, self.embed.weight) if self.lm_head is None else self.lm_head(x)
        if self.logit_probe is not None:
            self.logit_probe(logits)
        if self.cfg.final_softcap is not None:
            logits = self.cfg.final_softcap * torch.tanh(logits / self.cfg.final_softcap)
        return logits


def build_model(cfg: ModelConfig) -> Transformer:
    """Build the model a config describes. Works under `torch.device("meta")` for the large presets."""
    return Transformer(cfg)
