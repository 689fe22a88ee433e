"""The presets start where the reference implementations do: every norm of a preset built from scratch (post-norms
above all, the ones `post_norm_init` sets) computes what the same norm of the `transformers` model built from the
converted config computes at its own init (Gemma 2/3: weight 0 in a (1 + w) scale; Gemma 4, OLMo 3: weight 1)."""

from __future__ import annotations

import math

import pytest
import torch

from workbench import build_model, get_preset
from workbench.config import ModelConfig
from workbench.interop import ARCHS, config_to_hf, hf_names
from workbench.presets import PRESETS

# the presets whose branches end in a norm before the residual add (Gemma's sandwich, OLMo's reordered blocks)
WITH_POST_NORMS = [name for name, cfg in PRESETS.items() if cfg.norm_placement in ("sandwich", "reordered")]


def reduced(cfg: ModelConfig) -> ModelConfig:
    """`cfg` narrowed to width 32 and a 64-entry vocabulary, keeping its layers, pattern and norm layout."""
    narrow = dict(vocab_size=64, d_model=32, n_heads=2, n_kv_heads=1, mlp_hidden=64, max_seq_len=64,
                  window=min(cfg.window, 16))  # fmt: skip
    if cfg.head_dim is not None:  # set as Gemma sets it; unset (d_model / n_heads) as OLMo 3 requires
        narrow["head_dim"] = 8
    if cfg.head_dim_global is not None:
        narrow["head_dim_global"] = 16
    if cfg.ple_dim:
        narrow["ple_dim"] = 8
    return cfg.replace(**narrow)


def norm_pairs(cfg: ModelConfig) -> list[tuple[str, torch.nn.Module, torch.nn.Module]]:
    """(name, ours, reference) for every norm with a gain: ours from `build_model`, the reference from the HF class
    built on `config_to_hf(cfg)`, each initialised by its own code."""
    torch.manual_seed(0)
    ours = build_model(cfg)
    hf_config = config_to_hf(cfg)
    hf = next(model_cls for config_cls, model_cls in ARCHS.values() if type(hf_config) is config_cls)(hf_config)
    pairs = []
    for name, module in ours.named_modules():
        if name.endswith("norm") and isinstance(getattr(module, "weight", None), torch.Tensor):
            (hf_name,) = hf_names(f"{name}.weight")
            pairs.append((name, module, hf.get_submodule(hf_name.removesuffix(".weight"))))
    return pairs


@pytest.mark.parametrize("preset", WITH_POST_NORMS)
def test_every_norm_of_a_preset_starts_at_the_reference_init(preset):
    """Same input, same output, for each norm: post-norms at unit gain like the reference's (not the scaled gain
    the presets had from 2026-12-02 to 2026-12-08), pre-norms, QK-norms, PLE and final norms at identity."""
    cfg = reduced(get_preset(preset))
    assert cfg.post_norm_init is None and cfg.post_norm_gain == 1.0
    pairs = norm_pairs(cfg)
    post = [name for name, _, _ in pairs if name.endswith("post_norm")]
    assert len(post) == 2 * cfg.n_layers  # after attention and after the MLP, in every layer
    torch.manual_seed(1)
    with torch.no_grad():
        for name, mine, theirs in pairs:
            x = torch.randn(4, mine.weight.numel()) * 3
            torch.testing.assert_close(mine(x), theirs(x), msg=lambda m, name=name: f"{preset} {name}: {m}")


@pytest.mark.parametrize("preset", ["gemma2-2b", "gemma3-1b", "gemma4-e2b", "olmo3-tiny"])
def test_scaled_post_norms_start_at_one_over_sqrt_2l_and_the_rest_as_the_reference(preset):
    """`post_norm_init: scaled` is 1/sqrt(2 n_layers): each post-norm's output RMS is that gain (within float32's
    eps times the reduction's length), while every other norm still matches the reference."""
    cfg = reduced(get_preset(preset)).replace(post_norm_init="scaled")
    gain = 1 / math.sqrt(2 * cfg.n_layers)
    assert cfg.post_norm_gain == gain
    torch.manual_seed(1)
    with torch.no_grad():
        for name, mine, theirs in norm_pairs(cfg):
            x = torch.randn(4, mine.weight.numel()) * 3
            if name.endswith("post_norm"):
                rms = mine(x).pow(2).mean(-1).sqrt()
                tol = x.shape[-1] * torch.finfo(torch.float32).eps
                torch.testing.assert_close(rms, torch.full_like(rms, gain), rtol=tol, atol=0.0)
            else:
                torch.testing.assert_close(mine(x), theirs(x))
