"""Logit parity with transformers' Gemma 2 / Gemma 3 on small random reference models, and that it can fail."""

import functools

import pytest
import torch
from transformers import Gemma2Config, Gemma2ForCausalLM, Gemma3Config, Gemma3ForCausalLM, Gemma3TextConfig

from tests.numerics import assert_close_to_reference, transformer_terms
from workbench import build_model, get_preset, interop
from workbench.interop import config_from_hf, config_to_hf, from_hf, to_hf
from workbench.model import Transformer

WINDOW, SEQ, VOCAB = 4, 24, 128
# 7 layers, window < sequence, GQA 4:2, head_dim 24 != 64 / 4, query_pre_attn_scalar 20 != head_dim
SHAPE = dict(
    vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=7, num_attention_heads=4,
    num_key_value_heads=2, head_dim=24, query_pre_attn_scalar=20, sliding_window=WINDOW, max_position_embeddings=64,
)  # fmt: skip
GEMMA3_ROPE = {
    "sliding_attention": {"rope_type": "default", "rope_theta": 10_000.0},
    "full_attention": {"rope_type": "linear", "rope_theta": 1_000_000.0, "factor": 2.0},
}


def randomise(model: torch.nn.Module) -> torch.nn.Module:
    """Random weights, norms included (they start at 0, where a wrong norm offset would go unnoticed)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.normal_(0.0, 0.5 if "norm" in name else 0.1)
    return model.eval()


def reference(arch: str, **overrides) -> torch.nn.Module:
    if arch == "gemma2":  # small caps so that tanh is far from linear and the cap value shows in the logits
        config = Gemma2Config(**SHAPE, attn_logit_softcapping=2.0, final_logit_softcapping=3.0,
                              attn_implementation="eager", **overrides)  # fmt: skip
        return randomise(Gemma2ForCausalLM(config))
    config = Gemma3TextConfig(**SHAPE, rope_parameters=GEMMA3_ROPE, attn_implementation="eager", **overrides)
    return randomise(Gemma3ForCausalLM(config))


def logits(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        out = model(x)
    return out if isinstance(out, torch.Tensor) else out.logits


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


def assert_parity(model: torch.nn.Module, x: torch.Tensor, expected: torch.Tensor) -> None:
    """`model`'s logits on `x` equal `expected` up to float32 rounding over the model's depth and x's length."""
    cfg = model.cfg if isinstance(model, Transformer) else config_from_hf(model.config)
    assert_close_to_reference(logits(model, x), expected, terms=transformer_terms(cfg, x.shape[1]))


@functools.cache
def ref(arch: str) -> tuple[torch.nn.Module, torch.Tensor]:
    """The reference model of `arch` and a batch of inputs, built once per test session."""
    gen = torch.Generator().manual_seed(1)
    torch.manual_seed(1)
    return reference(arch), torch.randint(0, VOCAB, (2, SEQ), generator=gen)


ARCHS = ["gemma2", "gemma3"]


@pytest.mark.parametrize("arch", ARCHS)
def test_reference_models_exercise_every_feature(arch):
    hf, _ = ref(arch)
    cfg = from_hf(hf).cfg
    assert cfg.n_layers >= 7 and {"local", "global"} == set(cfg.layer_types) and cfg.window < SEQ
    assert cfg.n_kv_heads < cfg.n_heads and cfg.head_dim != cfg.d_model // cfg.n_heads
    assert cfg.query_pre_attn_scalar != cfg.head_dim
    if arch == "gemma2":
        assert cfg.softcap == 2.0 and cfg.final_softcap == 3.0 and not cfg.qk_norm
    else:
        assert cfg.qk_norm and cfg.rope_base_local != cfg.rope_base_global and cfg.rope_scaling_global == 2.0
    assert all(p.abs().min() > 0 for n, p in hf.named_parameters() if "norm" in n)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.numerics
def test_logit_parity(arch):
    hf, x = ref(arch)
    expected = logits(hf, x)
    assert expected.abs().max() > 1.0  # not a degenerate near-zero output
    assert_parity(from_hf(hf), x, expected)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.numerics
def test_round_trip_reproduces_reference(arch):
    hf, x = ref(arch)
    back = to_hf(from_hf(hf))
    assert type(back) is type(hf)
    assert_parity(back, x, logits(hf, x))
    assert config_from_hf(back.config) == config_from_hf(hf.config)


def _mutated(hf: torch.nn.Module, **changes) -> torch.nn.Module:
    ours = from_hf(hf)
    if "window" in changes:
        ours.set_window(changes.pop("window"))
    if changes:
        state = ours.state_dict()
        ours = build_model(ours.cfg.replace(**changes)).eval()
        ours.load_state_dict(state)
    return ours


BOTH = [
    ("norm without the 1+w offset", {"norm": "rmsnorm"}),
    ("window edge off by one", {"window": WINDOW + 1}),
    ("no embedding scale", {"embed_scale": False}),
    ("attention scaled by head_dim", {"query_pre_attn_scalar": None}),
]
BREAKS = [(arch, name, changes) for arch in ARCHS for name, changes in BOTH] + [
    ("gemma2", "attention soft-cap value", {"attn_softcap": 2.5}),
    ("gemma2", "final soft-cap value", {"final_softcap": 3.5}),
    ("gemma3", "local RoPE base = global base", {"rope_base_local": 1_000_000.0}),
    ("gemma3", "global RoPE base = local base", {"rope_base_global": 10_000.0}),
    ("gemma3", "no linear RoPE scaling on global", {"rope_scaling_global": 1.0}),
]


@pytest.mark.parametrize(("arch", "name", "changes"), BREAKS, ids=[f"{a}-{n}" for a, n, _ in BREAKS])
def test_parity_breaks_with_one_element_wrong(arch, name, changes):
    """Each is one plausible bug; a parity test passing with any of them would prove nothing."""
    hf, x = ref(arch)
    assert max_diff(logits(_mutated(hf, **changes), x), logits(hf, x)) > 1e-3


@pytest.mark.parametrize("name", ["gemma2-2b", "gemma2-27b", "gemma3-1b", "gemma3-27b", "tiny"])
def test_preset_configs_round_trip(name):
    cfg = get_preset(name)
    back = config_from_hf(config_to_hf(cfg))
    scalar = cfg.query_pre_attn_scalar or cfg.resolved_head_dim
    assert back == cfg.replace(
        layer_pattern=cfg.layer_types, head_dim=cfg.resolved_head_dim, query_pre_attn_scalar=scalar
    )
    assert type(config_to_hf(cfg)) is (Gemma3TextConfig if cfg.qk_norm else Gemma2Config)


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"norm_placement": "pre"}, "norm_placement"),
        ({"mlp": "swiglu"}, "mlp"),
        ({"norm": "rmsnorm"}, "norm"),
        ({"position": "none"}, "position"),
        ({"embed_scale": False}, "embed_scale"),
        ({"rope_fraction": 0.5}, "rope_fraction"),
        ({"bias": True}, "bias"),
        ({"dropout": 0.1}, "dropout"),
        ({"query_pre_attn_scalar": 20.5}, "query_pre_attn_scalar"),
    ],
)
def test_inexpressible_config_raises(changes, field):
    cfg = get_preset("tiny").replace(**changes)
    with pytest.raises(ValueError, match=f"^{field}: got {changes[field]!r}; allowed"):
        config_to_hf(cfg)


def test_gemma2_cannot_carry_qk_norm_or_two_rope_bases():
    with pytest.raises(ValueError, match=r"attn_logit: got 'qk_norm'.*gemma2"):
        config_to_hf(get_preset("tiny"), arch="gemma2")
    cfg = get_preset("gemma2-2b").replace(rope_base_global=1e6)
    with pytest.raises(ValueError, match=r"rope_base_local=10000\.0, rope_base_global=1000000\.0.*one RoPE"):
        config_to_hf(cfg)
    all_global = get_preset("gemma2-2b").replace(layer_pattern="global", rope_scaling_global=4.0)
    assert config_to_hf(all_global).rope_parameters == {"rope_type": "linear", "rope_theta": 10_000.0, "factor": 4.0}


def test_unmapped_field_must_keep_its_default(monkeypatch):
    """A field added to ModelConfig later, with no HF counterpart, cannot be dropped silently."""
    monkeypatch.setattr(interop, "MAPPED_FIELDS", interop.MAPPED_FIELDS - {"init_std"})
    config_to_hf(get_preset("tiny"))
    with pytest.raises(ValueError, match=r"init_std: got 0\.05; allowed: 0\.02, its default"):
        config_to_hf(get_preset("tiny").replace(init_std=0.05))


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: Gemma3TextConfig(**SHAPE, use_bidirectional_attention=True), "use_bidirectional_attention: got True"),
        (lambda: Gemma2Config(**SHAPE, hidden_activation="gelu"), "hidden_activation: got 'gelu'"),
        (lambda: Gemma2Config(**SHAPE, attention_bias=True), "attention_bias: got True"),
        (lambda: Gemma2Config(**SHAPE, attention_dropout=0.1), "attention_dropout: got 0.1"),
        (
            lambda: Gemma3TextConfig(
                **SHAPE,
                rope_parameters={
                    **GEMMA3_ROPE,
                    "full_attention": {"rope_type": "yarn", "rope_theta": 1e6, "factor": 8.0},
                },
            ),
            r"rope_parameters\['full_attention'\].*yarn",
        ),
        (
            lambda: Gemma3TextConfig(
                **SHAPE,
                rope_parameters={
                    **GEMMA3_ROPE,
                    "sliding_attention": {"rope_type": "linear", "rope_theta": 1e4, "factor": 2.0},
                },
            ),
            r"rope_parameters\['sliding_attention'\].*full_attention layers only",
        ),
        (
            lambda: Gemma2Config(**SHAPE, rope_parameters={"rope_type": "linear", "rope_theta": 1e4, "factor": 2.0}),
            r"rope_parameters: got .*linear",
        ),
        (lambda: Gemma3Config(text_config=Gemma3TextConfig(**SHAPE)), "pass its .text_config"),
    ],
)
def test_unmodelled_hf_config_raises(make, message):
    with pytest.raises(ValueError, match=message):
        config_from_hf(make())


def test_unknown_hf_key_raises():
    config = Gemma2Config(**SHAPE)
    config.some_new_switch = True
    with pytest.raises(ValueError, match=r"\['some_new_switch'\] have no counterpart"):
        config_from_hf(config)


@pytest.mark.parametrize("gain", [None, "scaled", 0.3])
@pytest.mark.numerics
def test_a_model_trained_from_any_post_norm_init_exports_with_its_gains(gain):
    """post_norm_init only shapes the initialisation: the exported weights carry the gains, so the logits agree."""
    torch.manual_seed(3)
    ours = build_model(get_preset("tiny").replace(post_norm_init=gain, d_model=64, n_layers=2, mlp_hidden=128))
    x = torch.randint(0, ours.cfg.vocab_size, (1, 10))
    assert_parity(to_hf(ours), x, logits(ours, x))


@pytest.mark.numerics
def test_untied_head_round_trips():
    torch.manual_seed(2)
    hf = reference("gemma3", tie_word_embeddings=False)
    x = torch.randint(0, VOCAB, (1, 10))
    ours = from_hf(hf)
    assert ours.lm_head is not None and not torch.equal(ours.lm_head.weight, ours.embed.weight)
    assert_parity(ours, x, logits(hf, x))
    assert_parity(to_hf(ours), x, logits(hf, x))
