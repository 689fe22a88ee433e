"""Logit parity with transformers' Gemma4ForCausalLM on small random models covering each Gemma 4 knob, and that it
can fail: each single wrong element (a config value, a scale, a shared layer computing its own K/V) breaks it."""

import functools
import re

import pytest
import torch
from transformers import Gemma4Config, Gemma4ForCausalLM, Gemma4TextConfig

from tests.numerics import assert_close_to_reference, transformer_terms
from workbench import build_model, get_preset
from workbench.interop import config_from_hf, config_to_hf, from_hf, to_hf
from workbench.model import Transformer

WINDOW, SEQ, VOCAB = 4, 24, 128
# 8 layers L L G L L G L L, the last made global by transformers (and by "+last_global"): L L G L L G L G.
# window < sequence; GQA 4:2 on local layers; global layers 32 wide (local 16) with proportional RoPE on a quarter
LAYER_TYPES = ["sliding_attention", "sliding_attention", "full_attention"] * 2 + ["sliding_attention", "full_attention"]
ROPE = {
    "sliding_attention": {"rope_type": "default", "rope_theta": 10_000.0},
    "full_attention": {"rope_type": "proportional", "partial_rotary_factor": 0.25, "rope_theta": 1_000_000.0},
}
SHAPE = dict(
    vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=8, num_attention_heads=4,
    num_key_value_heads=2, head_dim=16, global_head_dim=32, sliding_window=WINDOW, max_position_embeddings=64,
    layer_types=LAYER_TYPES, rope_parameters=ROPE, final_logit_softcapping=3.0, hidden_size_per_layer_input=8,
    vocab_size_per_layer_input=VOCAB + 32,
)  # fmt: skip
MOE = dict(enable_moe_block=True, num_experts=4, top_k_experts=2, moe_intermediate_size=24)
K_EQ_V = dict(attention_k_eq_v=True, num_global_key_value_heads=1)  # MQA on global layers, GQA on local ones
# transformers needs per-layer inputs (PLE) on every model whose layers share KV: all but `dense` have them
REFERENCES = {
    "dense": dict(hidden_size_per_layer_input=0),  # no PLE, no MoE, no sharing, K != V
    "ple": {},
    "everything": dict(**MOE, **K_EQ_V, num_kv_shared_layers=3, use_double_wide_mlp=True),
    "share1": dict(num_kv_shared_layers=1),  # the last (global) layer reuses layer 5's KV
    "share5": dict(**K_EQ_V, num_kv_shared_layers=5),  # layers 3..7 reuse layer 1 (local) and layer 2 (global)
    "rope": dict(
        rope_parameters={  # proportional on local layers too, and linear scaling on global ones
            "sliding_attention": {"rope_type": "proportional", "partial_rotary_factor": 0.5, "rope_theta": 10_000.0},
            "full_attention": {**ROPE["full_attention"], "factor": 2.0},
        }
    ),
}


def randomise(model: torch.nn.Module) -> torch.nn.Module:
    """Random weights and layer scalars. Norm weights (plain scales, 1 at init) around 1 and never near 0, so a 1+w
    offset shows; router logits spread wide, so rounding never flips a top-k choice. Matrices at std 0.05 and q/k
    norm gains at most 1: with attention scale 1, larger ones make the nets so sensitive that float32 rounding
    alone (kernel choices, summation order) grows to ~1e-4 over 8 layers on some draws."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("q_norm.weight", "k_norm.weight")):  # attention logits at scale 1: not sharper
                p.uniform_(0.5, 1.0)
            elif "norm" in name or name.endswith(("router.scale", "per_expert_scale")):
                p.uniform_(0.5, 1.5)
            else:
                p.normal_(0.0, 1.0 if "router.proj" in name else 0.05)
        for name, b in model.named_buffers():
            if name.endswith("layer_scalar"):
                b.uniform_(0.5, 1.5)
    return model.eval()


def reference(name: str) -> Gemma4ForCausalLM:
    config = Gemma4TextConfig(**{**SHAPE, **REFERENCES[name]}, attn_implementation="eager")
    return randomise(Gemma4ForCausalLM(config))


def logits(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        out = model(x) if not isinstance(model, Gemma4ForCausalLM) else model(x, use_cache=False)
    return out if isinstance(out, torch.Tensor) else out.logits


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


def assert_parity(model: torch.nn.Module, x: torch.Tensor, expected: torch.Tensor) -> None:
    """`model`'s logits on `x` equal `expected` up to float32 rounding over the model's depth and x's length."""
    cfg = model.cfg if isinstance(model, Transformer) else config_from_hf(model.config)
    assert_close_to_reference(logits(model, x), expected, terms=transformer_terms(cfg, x.shape[1]))


@functools.cache
def ref(name: str) -> tuple[Gemma4ForCausalLM, torch.Tensor, torch.Tensor]:
    """The reference model, a batch of inputs and its logits, built once per test session."""
    torch.manual_seed(4)
    hf = reference(name)
    x = torch.randint(0, VOCAB, (2, SEQ), generator=torch.Generator().manual_seed(4))
    return hf, x, logits(hf, x)


def test_reference_models_exercise_every_knob():
    cfgs = {name: from_hf(ref(name)[0]).cfg for name in REFERENCES}
    for cfg in cfgs.values():
        assert cfg.window < SEQ and cfg.n_kv_heads < cfg.n_heads and cfg.layer_types[-1] == "global"
        assert cfg.head_dim_global == 32 != cfg.resolved_head_dim and cfg.rope_fraction_global == 0.25
        assert cfg.rope_partial == "proportional" and cfg.v_norm and cfg.layer_scalar
        assert cfg.query_pre_attn_scalar == 1.0 and cfg.final_softcap == 3.0
    assert cfgs["dense"].ple_dim == 0 and cfgs["ple"].ple_dim == 8 and cfgs["ple"].ple_vocab_size == VOCAB + 32
    everything = cfgs["everything"]
    assert everything.k_eq_v_global and everything.n_kv_heads_global == 1 and everything.double_wide_mlp
    assert (everything.moe_experts, everything.moe_top_k, everything.moe_hidden) == (4, 2, 24)
    assert sorted({c.kv_shared_layers for c in cfgs.values()}) == [0, 1, 3, 5]
    assert (cfgs["rope"].rope_fraction, cfgs["rope"].rope_scaling_global) == (0.5, 2.0)
    hf = ref("everything")[0]
    assert all(p.abs().min() > 0.4 for n, p in hf.named_parameters() if "norm" in n)
    assert not hasattr(hf.model.layers[2].self_attn, "v_proj") or hf.model.layers[2].self_attn.v_proj is None


@pytest.mark.parametrize("name", list(REFERENCES))
@pytest.mark.numerics
def test_logit_parity(name):
    hf, x, expected = ref(name)
    assert expected.abs().max() > 1.0  # not a degenerate near-zero output
    assert_parity(from_hf(hf), x, expected)


@pytest.mark.parametrize("name", list(REFERENCES))
@pytest.mark.numerics
def test_round_trip_reproduces_reference(name):
    hf, x, expected = ref(name)
    back = to_hf(from_hf(hf))
    assert type(back) is Gemma4ForCausalLM
    assert_parity(back, x, expected)
    assert config_from_hf(back.config) == config_from_hf(hf.config)


def test_transformers_needs_per_layer_inputs_to_share_kv():
    """Why every sharing reference has PLE: transformers' KV-shared layers slice the per-layer inputs."""
    config = Gemma4TextConfig(**{**SHAPE, "hidden_size_per_layer_input": 0, "num_kv_shared_layers": 1},
                              attn_implementation="eager")  # fmt: skip
    with pytest.raises(TypeError, match="not subscriptable"):
        Gemma4ForCausalLM(config).eval()(torch.zeros(1, 4, dtype=torch.long), use_cache=False)
    ours = build_model(config_from_hf(config)).eval()  # ours shares KV without PLE
    assert ours(torch.zeros(1, 4, dtype=torch.long)).shape == (1, 4, VOCAB)


# single faults --------------------------------------------------------------------------------------------------
def _with_config(hf: torch.nn.Module, **changes) -> torch.nn.Module:
    ours = from_hf(hf)
    if "window" in changes:
        ours.set_window(changes.pop("window"))
    if changes:
        state = ours.state_dict()
        ours = build_model(ours.cfg.replace(**changes)).eval()
        ours.load_state_dict(state)
    return ours


def _set(path: str, value: float):
    """A fault that sets (or fills) the attribute `path` names, e.g. router.scale, in every module that has it."""
    attr = path.rsplit(".", 1)[-1]

    def fault(model: torch.nn.Module) -> None:
        for name, module in model.named_modules():
            if f".{name}.{attr}".endswith(f".{path}") and hasattr(module, attr):
                target = getattr(module, attr)
                if isinstance(target, torch.Tensor):
                    with torch.no_grad():
                        target.fill_(value)
                else:
                    setattr(module, attr, value)

    return fault


CONFIG_FAULTS = [
    ("norm with a 1+w offset", {"norm": "gemma_rmsnorm"}),
    ("window edge off by one", {"window": WINDOW + 1}),
    ("no embedding scale", {"embed_scale": False}),
    ("attention scaled by 1/sqrt(head_dim)", {"query_pre_attn_scalar": None}),
    ("no value norm", {"v_norm": False}),
    ("leading partial RoPE on global layers", {"rope_partial": "leading"}),
    ("whole-head RoPE on global layers", {"rope_fraction_global": 1.0}),
    ("local RoPE base = global base", {"rope_base_local": 1_000_000.0}),
    ("global RoPE base = local base", {"rope_base_global": 10_000.0}),
    ("one expert per token", {"moe_top_k": 1}),
    ("final soft-cap value", {"final_softcap": 3.5}),
]
MODULE_FAULTS = [
    ("layer scalars ignored", "layer_scalar", 1.0),
    ("PLE table not scaled by sqrt(ple_dim)", "ple.embed_multiplier", 1.0),
    ("PLE context projection not scaled by d^-0.5", "ple.proj_multiplier", 1.0),
    ("router input not scaled by d^-0.5", "router.input_multiplier", 1.0),
    ("router per-expert scale ignored", "router.per_expert_scale", 1.0),
    ("router per-channel scale ignored", "router.scale", 1.0),
]


@pytest.mark.parametrize(("name", "changes"), CONFIG_FAULTS, ids=[n for n, _ in CONFIG_FAULTS])
def test_parity_breaks_with_one_config_value_wrong(name, changes):
    """Each is one plausible bug; a parity test passing with any of them would prove nothing."""
    hf, x, expected = ref("everything")
    assert max_diff(logits(_with_config(hf, **changes), x), expected) > 1e-3


@pytest.mark.parametrize(("name", "path", "value"), MODULE_FAULTS, ids=[n for n, *_ in MODULE_FAULTS])
def test_parity_breaks_with_one_scale_wrong(name, path, value):
    hf, x, expected = ref("everything")
    ours = from_hf(hf)
    _set(path, value)(ours)
    assert max_diff(logits(ours, x), expected) > 1e-3


def test_parity_breaks_when_shared_layers_compute_their_own_kv():
    """Layers 3..7 given their source layer's K/V projection rows (and key norm) but computing K/V from their own
    input: what a sharing that copied weights instead of reusing keys and values would compute."""
    hf, x, expected = ref("share5")
    ours = from_hf(hf)
    unshared = build_model(ours.cfg.replace(kv_shared_layers=0)).eval()
    state, source = ours.state_dict(), {"local": 1, "global": 2}
    q_rows = ours.cfg.n_heads * ours.cfg.head_dim_global  # the global q rows; local ones below
    for i, layer_type in enumerate(ours.cfg.layer_types):
        if not ours.cfg.kv_shared(i):
            continue
        rows = q_rows if layer_type == "global" else ours.cfg.n_heads * ours.cfg.resolved_head_dim
        src = f"blocks.{source[layer_type]}.attn."
        qkv = f"blocks.{i}.attn.qkv_proj.weight"
        state[qkv] = torch.cat((state[qkv], state[f"{src}qkv_proj.weight"][rows:]))
        state[f"blocks.{i}.attn.k_norm.weight"] = state[f"{src}k_norm.weight"]
    unshared.load_state_dict(state)
    assert max_diff(logits(unshared, x), expected) > 1e-3


# configs ---------------------------------------------------------------------------------------------------------
def test_gemma4_preset_is_the_transformers_default():
    """gemma4-e2b is Gemma4TextConfig()'s defaults, every value (layer types and RoPE included)."""
    assert config_from_hf(Gemma4TextConfig()) == get_preset("gemma4-e2b").replace(
        layer_pattern=get_preset("gemma4-e2b").layer_types
    )
    hf = config_to_hf(get_preset("gemma4-e2b"))
    assert type(hf) is Gemma4TextConfig and hf.to_dict() == Gemma4TextConfig().to_dict()


@pytest.mark.parametrize("name", ["gemma4-e2b", "gemma4-tiny", "gemma4-small"])
def test_preset_configs_round_trip(name):
    cfg = get_preset(name)
    assert config_from_hf(config_to_hf(cfg)) == cfg.replace(
        layer_pattern=cfg.layer_types, head_dim=cfg.resolved_head_dim
    )


def test_last_layer_global_is_what_transformers_forces():
    cfg = get_preset("gemma4-tiny").replace(n_layers=8, layer_pattern="2:1+last_global")
    assert config_to_hf(cfg).layer_types == LAYER_TYPES
    with pytest.raises(ValueError, match=r"layer_pattern: got '2:1'.*last layer"):
        config_to_hf(cfg.replace(layer_pattern="2:1"))


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"norm": "gemma_rmsnorm"}, "norm"),
        ({"query_pre_attn_scalar": None}, "query_pre_attn_scalar"),
        ({"layer_scalar": False}, "layer_scalar"),
        ({"rope_partial": "leading"}, "rope_partial"),
        ({"attn_logit": "softcap+qk_norm"}, "attn_logit"),
        ({"rope_scaling_type": "yarn", "rope_scaling_global": 2.0}, "rope_scaling_type"),
        ({"mlp": "swiglu"}, "mlp"),
    ],
)
def test_inexpressible_config_raises(changes, field):
    with pytest.raises(ValueError, match=f"^{field}: got {re.escape(repr(changes[field]))}; allowed"):
        config_to_hf(get_preset("gemma4-tiny").replace(**changes), arch="gemma4")


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"use_bidirectional_attention": "all"}, "use_bidirectional_attention: got 'all'"),
        ({"hidden_activation": "gelu"}, "hidden_activation: got 'gelu'"),
        ({"attention_bias": True}, "attention_bias: got True"),
        ({"rope_parameters": {**ROPE, "full_attention": {"rope_type": "yarn", "rope_theta": 1e6, "factor": 8.0,
                                                       "original_max_position_embeddings": 64}}},
         r"rope_parameters\['full_attention'\].*yarn"),
        ({"rope_parameters": {**ROPE, "sliding_attention": {"rope_type": "proportional", "rope_theta": 1e4,
                                                            "factor": 2.0}}},
         r"rope_parameters\['sliding_attention'\].*factor"),
        ({"per_layer_config": {0: {"head_dim": 8}}}, r"per_layer_config"),
    ],
)  # fmt: skip
def test_unmodelled_hf_config_raises(changes, message):
    with pytest.raises(ValueError, match=message):
        config_from_hf(Gemma4TextConfig(**{**SHAPE, **changes}))


def test_multimodal_config_asks_for_its_text_config():
    with pytest.raises(ValueError, match=r"pass its \.text_config"):
        config_from_hf(Gemma4Config(text_config=Gemma4TextConfig(**SHAPE)))
