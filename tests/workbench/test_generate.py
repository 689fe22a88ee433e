"""KV-cache decoding equals the full forward pass; greedy generation equals transformers' `generate`."""

import pytest
import torch
from transformers import Gemma3ForCausalLM, Gemma3TextConfig

from tests.numerics import assert_close_to_reference, transformer_terms
from workbench import build_model, get_preset
from workbench.generate import generate
from workbench.interop import from_hf, to_hf

WINDOW = 4
PATTERNS = ["global", "1:1", "5:1"]


def small_model(pattern: str, **overrides) -> torch.nn.Module:
    base = dict(d_model=32, n_layers=6, n_heads=4, n_kv_heads=2, mlp_hidden=64, window=WINDOW, max_seq_len=64)
    cfg = get_preset("tiny").replace(layer_pattern=pattern, **{**base, **overrides})
    model = build_model(cfg).eval()
    with torch.no_grad():  # non-zero norm weights, so that every part of the computation matters
        for name, p in model.named_parameters():
            if "norm" in name:
                p.normal_(0.0, 0.5)
    return model


def cached_logits(model: torch.nn.Module, x: torch.Tensor, chunks: list[int]) -> torch.Tensor:
    cache = model.new_cache(x.shape[0], x.shape[1])
    out, start = [], 0
    with torch.no_grad():
        for n in chunks:
            out.append(model(x[:, start : start + n], cache))
            start += n
    assert start == x.shape[1] == cache.length
    return torch.cat(out, dim=1)


@pytest.mark.parametrize("pattern", PATTERNS)
@pytest.mark.parametrize("chunks", [[1] * 22, [7, 1, 1, 5, 3, 1, 4]], ids=["token-by-token", "prefill+chunks"])
@pytest.mark.parametrize("logit", ["qk_norm", "softcap"])
@pytest.mark.numerics
def test_cached_decoding_matches_full_forward(pattern, chunks, logit):
    """22 tokens, 5.5 windows: ring buffers wrap several times, chunks straddle the window edge."""
    model = small_model(pattern, attn_logit=logit, final_softcap=30.0 if logit == "softcap" else None)
    x = torch.randint(0, 264, (2, sum(chunks)))
    with torch.no_grad():
        full = model(x)
    assert_close_to_reference(cached_logits(model, x, chunks), full, terms=transformer_terms(model.cfg, x.shape[1]))


def random_weights(model: torch.nn.Module) -> torch.nn.Module:
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.1)
    return model


def hf_greedy(hf: torch.nn.Module, prompt: torch.Tensor, n: int) -> torch.Tensor:
    hf.generation_config.eos_token_id = None  # never stop early
    return hf.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=n, do_sample=False)


@pytest.mark.parametrize("arch", ["gemma2", "gemma3"])
@pytest.mark.numerics
def test_greedy_matches_transformers_generate(arch):
    """Same weights (ours -> to_hf): the same greedy tokens, batched, 20 tokens with a window of 4."""
    gemma2 = dict(attn_logit="softcap", attn_softcap=2.0, final_softcap=3.0, rope_base_global=10_000.0)
    pattern, extra = ("1:1", gemma2) if arch == "gemma2" else ("5:1", {"rope_scaling_global": 2.0})
    ours = random_weights(small_model(pattern, vocab_size=128, n_layers=7, head_dim=24, **extra))
    prompt = torch.randint(0, 128, (2, 5))
    expected = hf_greedy(to_hf(ours), prompt, 15)
    assert torch.equal(generate(ours, prompt, 15), expected)
    assert len(set(expected[0, 5:].tolist())) > 3  # not one token repeated


@pytest.mark.numerics
def test_greedy_matches_from_hf():
    """The other direction: a random transformers Gemma 3 model, converted with from_hf."""
    config = Gemma3TextConfig(
        vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=7, num_attention_heads=4,
        num_key_value_heads=2, head_dim=24, query_pre_attn_scalar=20, sliding_window=WINDOW,
        attn_implementation="eager",
    )  # fmt: skip
    hf = random_weights(Gemma3ForCausalLM(config)).eval()
    prompt = torch.randint(0, 128, (3, 6))
    assert torch.equal(generate(from_hf(hf), prompt, 10), hf_greedy(hf, prompt, 10))


def test_batched_rows_equal_single_prompts():
    model = small_model("5:1")
    prompts = torch.randint(0, 264, (3, 6))
    batched = generate(model, prompts, 12)
    assert batched.shape == (3, 18) and torch.equal(batched[:, :6], prompts)
    for row in range(3):
        assert torch.equal(generate(model, prompts[row], 12)[0], batched[row])


def test_sampling_is_seeded_and_respects_top_k():
    model = small_model("1:1")
    prompt = torch.randint(0, 264, (4, 5))
    sample = lambda seed, **kw: generate(model, prompt, 20, generator=torch.Generator().manual_seed(seed), **kw)  # noqa: E731
    assert torch.equal(sample(0, temperature=1.0, top_k=3), sample(0, temperature=1.0, top_k=3))
    assert not torch.equal(sample(0, temperature=1.0), sample(1, temperature=1.0))
    assert torch.equal(sample(0, temperature=1.0, top_k=1), generate(model, prompt, 20))
    out = sample(2, temperature=2.0, top_k=3)
    with torch.no_grad():
        top3 = model(out[:, :-1]).topk(3, dim=-1).indices[:, 4:]
    assert (top3 == out[:, 5:, None]).any(-1).all()
    assert not torch.equal(out, generate(model, prompt, 20))  # sampling is not greedy


def test_generate_checks_inputs_and_restores_mode():
    model = small_model("1:1").train()
    with pytest.raises(ValueError, match=r"prompts of lengths \[2, 3\]"):
        generate(model, [[1, 2], [1, 2, 3]], 4)
    for bad in ({"temperature": -1.0}, {"top_k": 0}):
        with pytest.raises(ValueError, match="allowed: max_new_tokens >= 0"):
            generate(model, [[1, 2]], 4, **bad)
    assert generate(model, [[1, 2], [3, 4]], 3).shape == (2, 5)
    assert model.training


@pytest.mark.parametrize("name", ["everything", "share5"])
@pytest.mark.numerics
def test_greedy_matches_transformers_gemma4_generate(name):
    """transformers' Gemma 4 decodes with its own cache (sliding layers, KV-shared layers reading the store): the
    same greedy tokens as ours from the same weights, 16 tokens past a 6-token prompt with a window of 4."""
    from tests.workbench.test_interop_gemma4 import ref

    hf = ref(name)[0]
    prompt = torch.randint(0, 128, (2, 6), generator=torch.Generator().manual_seed(5))
    expected = hf_greedy(hf, prompt, 16)
    assert torch.equal(generate(from_hf(hf), prompt, 16), expected)
    assert len(set(expected[0, 6:].tolist())) > 3  # not one token repeated
