import pytest
import torch
from transformers import AutoModelForCausalLM

from analysis.params import count_params
from tests.tiers import tiered
from workbench import build_model, get_preset, list_presets
from workbench.config import ModelConfig
from workbench.interop import config_to_hf

REQUIRED = ["gemma3-1b", "gemma3-4b", "gemma3-12b", "gemma3-27b", "gemma2-2b", "gemma2-9b", "gemma2-27b",
            "llama-small", "tiny", "small", "gemma4-e2b", "gemma4-tiny", "gemma4-small"]  # fmt: skip


def test_required_presets_exist():
    assert set(REQUIRED) <= set(list_presets())


def test_unknown_preset_lists_the_allowed_ones():
    with pytest.raises(ValueError, match=r"preset: got 'gemma4'.*gemma3-1b"):
        get_preset("gemma4")


def _llama_params(cfg: ModelConfig) -> int:
    """Written from the architecture: untied embedding and head, per layer q/k/v/o, SwiGLU's three matrices and two
    pre-norm scales; the final norm."""
    d, hd = cfg.d_model, cfg.resolved_head_dim
    attention = 2 * d * cfg.n_heads * hd + 2 * d * cfg.n_kv_heads * hd
    return 2 * cfg.vocab_size * d + cfg.n_layers * (attention + 3 * d * cfg.mlp_hidden + 2 * d) + d


def _reference_params(cfg: ModelConfig) -> int:
    """transformers' model of the same config counted on the meta device; llama-small (SwiGLU, pre-norm, untied: no
    Gemma or OLMo counterpart) from the architecture."""
    if cfg.mlp == "swiglu" and cfg.norm_placement == "pre":
        return _llama_params(cfg)
    with torch.device("meta"):
        return sum(p.numel() for p in AutoModelForCausalLM.from_config(config_to_hf(cfg)).parameters())


# the fast tier's: one preset of each family
@pytest.mark.parametrize("name", tiered(list_presets(), ("tiny", "gemma2-2b", "gemma3-1b", "gemma4-e2b", "olmo3-tiny")))
def test_every_preset_builds_on_meta_with_the_reference_parameter_count(name):
    cfg = get_preset(name)
    with torch.device("meta"):
        model = build_model(cfg)
    assert sum(p.numel() for p in model.parameters()) == count_params(cfg)["total"] == _reference_params(cfg)


GEMMA2_TABLE2 = {"gemma2-2b": (590_118_912, 2_024_517_888), "gemma2-9b": (917_962_752, 8_324_201_984),
                 "gemma2-27b": (1_180_237_824, 26_047_480_320)}  # fmt: skip
GEMMA3_TABLE1_M = {"gemma3-1b": 698, "gemma3-4b": 3209, "gemma3-12b": 10759, "gemma3-27b": 25600}


def test_gemma_presets_have_the_published_parameter_counts():
    """Gemma 2 report Table 2 (embedding, non-embedding) exactly; Gemma 3 report Table 1 (non-embedding, in
    millions; its embedding column adds a multimodal projector on 4B-27B, so only 1B's 302M compares)."""
    for name, (embedding, non_embedding) in GEMMA2_TABLE2.items():
        counts = count_params(get_preset(name))
        assert (counts["embedding"], counts["non_embedding"]) == (embedding, non_embedding), name
    for name, millions in GEMMA3_TABLE1_M.items():
        assert round(count_params(get_preset(name))["non_embedding"] / 1e6) == millions, name
    assert round(count_params(get_preset("gemma3-1b"))["embedding"] / 1e6) == 302


@pytest.mark.parametrize("name", ["tiny", "small", "llama-small", "gemma4-tiny", "gemma4-small"])
def test_small_presets_run_forward(name):
    cfg = get_preset(name)
    logits = build_model(cfg)(torch.randint(0, cfg.vocab_size, (2, 33)))
    assert logits.shape == (2, 33, cfg.vocab_size) and torch.isfinite(logits).all()


def test_size_of_ablation_baselines():
    assert 0.8e6 <= count_params(get_preset("tiny"))["total"] <= 1.5e6
    assert 10e6 <= count_params(get_preset("small"))["total"] <= 30e6
    assert 0.8e6 <= count_params(get_preset("gemma4-tiny"))["total"] <= 1.5e6
    assert 10e6 <= count_params(get_preset("gemma4-small"))["total"] <= 30e6


def test_gemma4_tiny_is_gemma4_shaped():
    """The knobs Gemma4TextConfig has on by default, at tiny's widths; `tiny`'s Gemma 3 values elsewhere."""
    g4, g4_tiny, tiny = get_preset("gemma4-e2b"), get_preset("gemma4-tiny"), get_preset("tiny")
    shape = ("d_model", "n_layers", "n_heads", "n_kv_heads", "mlp_hidden", "window", "max_seq_len", "vocab_size")
    knobs = ("norm", "attn_logit", "query_pre_attn_scalar", "v_norm", "layer_scalar", "layer_pattern",
             "rope_fraction_global", "rope_partial", "rope_base_global", "rope_base_local")  # fmt: skip
    assert all(getattr(g4_tiny, f) == getattr(tiny, f) for f in shape)
    assert all(getattr(g4_tiny, f) == getattr(g4, f) for f in knobs)
    assert g4_tiny.head_dim_for("global") == 2 * g4_tiny.head_dim_for("local") and g4_tiny.ple_dim > 0


@pytest.mark.parametrize(
    ("name", "field", "value"),
    [
        ("gemma3-1b", "window", 512), ("gemma3-4b", "window", 1024), ("gemma3-27b", "query_pre_attn_scalar", 168),
        ("gemma3-27b", "head_dim", 128), ("gemma3-12b", "rope_scaling_global", 8.0),
        ("gemma3-1b", "rope_scaling_global", 1.0), ("gemma3-4b", "rope_base_global", 1e6),
        ("gemma3-4b", "rope_base_local", 1e4), ("gemma2-9b", "window", 4096),
        ("gemma2-27b", "query_pre_attn_scalar", 144),
        ("gemma2-2b", "final_softcap", 30.0), ("gemma2-2b", "layer_pattern", "1:1"),
    ],
)  # fmt: skip
def test_published_config_values(name, field, value):
    assert getattr(get_preset(name), field) == value
