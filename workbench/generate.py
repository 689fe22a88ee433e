"""Autoregressive generation with the KV cache: one prefill pass over the prompt, then one token per step."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from workbench.model import Transformer


def as_batch(prompt_ids: torch.Tensor | Sequence[Sequence[int]]) -> torch.Tensor:
    """(B, T) long tensor from a (T,) or (B, T) tensor or a list of equal-length token lists."""
    if not isinstance(prompt_ids, torch.Tensor):
        lengths = sorted({len(p) for p in prompt_ids})
        if len(lengths) > 1:
            raise ValueError(f"prompt_ids: got prompts of lengths {lengths}; allowed: prompts of one length")
        prompt_ids = torch.tensor(prompt_ids, dtype=torch.long)
    if prompt_ids.dim() == 1:
        prompt_ids = prompt_ids[None]
    if prompt_ids.dim() != 2 or prompt_ids.shape[1] == 0:
        raise ValueError(f"prompt_ids: got shape {tuple(prompt_ids.shape)}; allowed: (T,) or (B, T) with T >= 1")
    return prompt_ids.long()


def sample(
    logits: torch.Tensor, temperature: float, top_k: int | None, generator: torch.Generator | None
) -> torch.Tensor:
    """Next token ids (B,) from last-position logits (B, vocab): argmax at temperature 0, else top-k sampling."""
    if temperature == 0:
        return logits.argmax(dim=-1)
    logits = logits.float() / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = logits.softmax(dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(1)


@torch.no_grad()
def generate(
    model: Transformer,
    prompt_ids: torch.Tensor | Sequence[Sequence[int]],
    max_new_tokens: int,
    temperature: float = 0.0,
    top_k: int | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Prompt followed by `max_new_tokens` generated tokens, (B, T + max_new_tokens).

    Greedy at temperature 0; otherwise samples from softmax(logits / temperature), restricted to the top_k most
    likely tokens if given. The cache holds exactly the tokens fed, so memory is what `kv_cache_bytes` says.
    Prompts in a batch share one length (no padding): positions and windows are then the same for every row.
    """
    if max_new_tokens < 0 or temperature < 0 or (top_k is not None and top_k < 1):
        raise ValueError(
            f"max_new_tokens={max_new_tokens}, temperature={temperature}, top_k={top_k}; "
            "allowed: max_new_tokens >= 0, temperature >= 0, top_k None or >= 1"
        )
    ids = as_batch(prompt_ids).to(model.embed.weight.device)
    if max_new_tokens == 0:
        return ids
    was_training = model.training
    model.eval()
    try:
        cache = model.new_cache(ids.shape[0], ids.shape[1] + max_new_tokens - 1)
        logits = model(ids, cache)[:, -1]
        out = [ids]
        for step in range(max_new_tokens):
            token = sample(logits, temperature, top_k, generator)
            out.append(token[:, None])
            if step + 1 < max_new_tokens:
                logits = model(token[:, None], cache)[:, -1]
    finally:
        model.train(was_training)
    return torch.cat(out, dim=1)
