"""Conversion to and from `transformers`' Gemma 2, Gemma 3, Gemma 4 and OLMo 3 text decoders (configs and weights).

Every field is either mapped, or checked to hold the one value the other side can express; anything else is a
`ValueError` naming the field, its value and what is allowed, so nothing is dropped silently. Only HF keys that
do not change the function the model computes (token ids, output flags, bookkeeping) are ignored, by name.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import torch
from transformers import (
    Gemma2Config,
    Gemma2ForCausalLM,
    Gemma3ForCausalLM,
    Gemma3TextConfig,
    Gemma4ForCausalLM,
    Gemma4TextConfig,
    Olmo3Config,
    Olmo3ForCausalLM,
    PreTrainedConfig,
)

from workbench.blocks.patterns import GLOBAL, LOCAL
from workbench.config import ModelConfig
from workbench.model import Transformer, build_model

HF_LAYER_TYPE = {LOCAL: "sliding_attention", GLOBAL: "full_attention"}
OUR_LAYER_TYPE = {v: k for k, v in HF_LAYER_TYPE.items()}
ARCHS: dict[str, tuple[type[PreTrainedConfig], type]] = {
    "gemma2": (Gemma2Config, Gemma2ForCausalLM),
    "gemma3": (Gemma3TextConfig, Gemma3ForCausalLM),
    "gemma4": (Gemma4TextConfig, Gemma4ForCausalLM),
    "olmo3": (Olmo3Config, Olmo3ForCausalLM),
}
# HF keys with no effect on the logits: tokenizer ids, runtime/output flags, bookkeeping.
IGNORED_HF_KEYS = frozenset({
    "_name_or_path", "architectures", "bos_token_id", "eos_token_id", "pad_token_id", "chunk_size_feed_forward",
    "dtype", "id2label", "label2id", "model_type", "output_attentions", "output_hidden_states", "problem_type",
    "return_dict", "transformers_version", "use_cache", "is_encoder_decoder", "_sliding_window_pattern",
})  # fmt: skip
# Our fields that must hold one value for any Gemma model (field -> required value).
FIXED_FIELDS = {
    "attention": "mha", "mlp": "geglu", "norm": "gemma_rmsnorm", "position": "rope", "norm_placement": "sandwich",
    "rope_fraction": 1.0, "embed_scale": True, "bias": False, "dropout": 0.0,
}  # fmt: skip
# Our fields carried by an HF key (the rest must be in FIXED_FIELDS or hold their default value).
MAPPED_FIELDS = frozenset({
    "vocab_size", "d_model", "n_layers", "n_heads", "n_kv_heads", "head_dim", "mlp_hidden", "max_seq_len",
    "norm_eps", "layer_pattern", "window", "attn_logit", "attn_softcap", "final_softcap", "query_pre_attn_scalar",
    "rope_base_global", "rope_base_local", "rope_scaling_global", "tie_embeddings", "init_std",
})  # fmt: skip
# Our fields that shape only the initialisation: a built model's weights carry them, so any value exports.
INIT_ONLY_FIELDS = frozenset({"post_norm_init"})
# HF keys that must hold one value for us to model them (key -> allowed values).
FIXED_HF_KEYS = {"hidden_activation": ("gelu_pytorch_tanh",), "attention_bias": (False,),
                 "attention_dropout": (0, 0.0), "use_bidirectional_attention": (None, False)}  # fmt: skip
ROPE_KEYS = {"default": {"rope_type", "rope_theta"}, "linear": {"rope_type", "rope_theta", "factor"}}
# Gemma 4: our fields that must hold one value (plain-scale norms, attention scale 1 with QK-norm, the unscaled
# value norm, the layer scalar, proportional partial RoPE), and the ones its config carries
GEMMA4_FIXED_FIELDS = {
    "attention": "mha", "mlp": "geglu", "norm": "rmsnorm", "position": "rope", "norm_placement": "sandwich",
    "embed_scale": True, "bias": False, "dropout": 0.0, "attn_logit": "qk_norm", "query_pre_attn_scalar": 1.0,
    "v_norm": True, "layer_scalar": True, "rope_partial": "proportional",
}  # fmt: skip
GEMMA4_MAPPED_FIELDS = frozenset({
    "vocab_size", "d_model", "n_layers", "n_heads", "n_kv_heads", "head_dim", "mlp_hidden", "max_seq_len", "norm_eps",
    "layer_pattern", "window", "final_softcap", "rope_base_global", "rope_base_local", "rope_scaling_global",
    "rope_fraction", "rope_fraction_global", "head_dim_global", "n_kv_heads_global", "k_eq_v_global",
    "kv_shared_layers", "double_wide_mlp", "ple_dim", "ple_vocab_size", "moe_experts", "moe_top_k", "moe_hidden",
    "tie_embeddings", "init_std", "attn_softcap",  # attn_softcap: unused under attn_logit 'qk_norm'
})  # fmt: skip
GEMMA4_HF_KEYS = frozenset({
    "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
    "head_dim", "max_position_embeddings", "initializer_range", "rms_norm_eps", "tie_word_embeddings",
    "rope_parameters", "sliding_window", "layer_types", "final_logit_softcapping", "vocab_size_per_layer_input",
    "hidden_size_per_layer_input", "attention_k_eq_v", "num_kv_shared_layers", "enable_moe_block",
    "use_double_wide_mlp", "num_experts", "top_k_experts", "moe_intermediate_size", "per_layer_config",
})  # fmt: skip
# OLMo 3: SwiGLU, plain RMSNorm, QK-norm over the whole q / k projection, post-norm "reordered" blocks
# (x + norm(f(x))), no embedding scale, head width d_model / n_heads; and the fields its config carries
OLMO3_FIXED_FIELDS = {
    "attention": "mha", "mlp": "swiglu", "norm": "rmsnorm", "position": "rope", "norm_placement": "reordered",
    "attn_logit": "qk_norm", "qk_norm_scope": "projection", "embed_scale": False, "bias": False, "dropout": 0.0,
    "head_dim": None, "rope_fraction": 1.0,
}  # fmt: skip
OLMO3_MAPPED_FIELDS = frozenset({
    "vocab_size", "d_model", "n_layers", "n_heads", "n_kv_heads", "mlp_hidden", "max_seq_len", "norm_eps",
    "layer_pattern", "window", "rope_base_global", "rope_base_local", "rope_scaling_global", "tie_embeddings",
    "init_std", "attn_softcap",  # attn_softcap: unused under attn_logit 'qk_norm'
})  # fmt: skip
OLMO3_HF_KEYS = frozenset({
    "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
    "max_position_embeddings", "initializer_range", "rms_norm_eps", "tie_word_embeddings", "rope_parameters",
    "sliding_window", "layer_types",
})  # fmt: skip
OLMO3_FIXED_HF_KEYS = {"hidden_act": ("silu",), "attention_bias": (False,), "attention_dropout": (0, 0.0)}
# Gemma 4's RoPE per layer type: rope_type -> the keys it may have (factor: linear scaling, global layers only)
GEMMA4_ROPE_KEYS = {
    "default": {"rope_type", "rope_theta"},
    "linear": {"rope_type", "rope_theta", "factor"},
    "proportional": {"rope_type", "rope_theta", "partial_rotary_factor", "factor"},
}


def _bad(field: str, value: Any, allowed: str) -> ValueError:
    return ValueError(f"{field}: got {value!r}; allowed: {allowed}")


# config: HF -> ours -------------------------------------------------------------------------------------------
def config_from_hf(config: PreTrainedConfig) -> ModelConfig:
    """Our `ModelConfig` for a `Gemma2Config`, `Gemma3TextConfig` or `Gemma4TextConfig`; unmodelled values raise."""
    arch = _arch_of_config(config)
    values = config.to_dict()
    if arch == "gemma4":
        return _config_from_gemma4(values)
    if arch == "olmo3":
        return _config_from_olmo3(values)
    mapped = {"vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
              "num_key_value_heads", "head_dim", "max_position_embeddings", "initializer_range", "rms_norm_eps",
              "tie_word_embeddings", "rope_parameters", "query_pre_attn_scalar", "sliding_window", "layer_types",
              "final_logit_softcapping", "attn_logit_softcapping", *FIXED_HF_KEYS}  # fmt: skip
    unknown = sorted(set(values) - mapped - IGNORED_HF_KEYS)
    if unknown:
        raise ValueError(f"{type(config).__name__}: key(s) {unknown} have no counterpart in ModelConfig")
    _check_fixed_hf_keys(values)
    layer_types = tuple(_our_layer_type(t) for t in values["layer_types"])
    softcap = values["attn_logit_softcapping"]
    attn_logit = ("softcap+" if softcap is not None else "") + ("qk_norm" if arch == "gemma3" else "")
    attn_logit = attn_logit.rstrip("+") or "none"
    window = values["sliding_window"]
    if window is None and LOCAL in layer_types:
        raise _bad("sliding_window", window, "an int >= 1 when layer_types has sliding_attention layers")
    rope = _rope_from_hf(arch, values["rope_parameters"], set(layer_types))
    optional = {"window": window, "attn_softcap": softcap}
    return ModelConfig(
        vocab_size=values["vocab_size"], d_model=values["hidden_size"], n_layers=values["num_hidden_layers"],
        n_heads=values["num_attention_heads"], n_kv_heads=values["num_key_value_heads"], head_dim=values["head_dim"],
        mlp_hidden=values["intermediate_size"], max_seq_len=values["max_position_embeddings"],
        norm_eps=values["rms_norm_eps"], layer_pattern=layer_types, attn_logit=attn_logit,
        final_softcap=values["final_logit_softcapping"], query_pre_attn_scalar=values["query_pre_attn_scalar"],
        tie_embeddings=values["tie_word_embeddings"], init_std=values["initializer_range"],
        **{k: v for k, v in optional.items() if v is not None}, **rope, **FIXED_FIELDS,
    )  # fmt: skip


def _arch_of_config(config: PreTrainedConfig) -> str:
    for arch, (config_cls, _) in ARCHS.items():
        if type(config) is config_cls:
            return arch
    hint = "; pass its .text_config" if hasattr(config, "text_config") else ""
    allowed = ", ".join(config_cls.__name__ for config_cls, _ in ARCHS.values())
    raise ValueError(f"config: got {type(config).__name__}; allowed: {allowed}{hint}")


def _our_layer_type(hf_type: str) -> str:
    if hf_type not in OUR_LAYER_TYPE:
        raise _bad("layer_types", hf_type, ", ".join(OUR_LAYER_TYPE))
    return OUR_LAYER_TYPE[hf_type]


def _rope_from_hf(arch: str, params: dict[str, Any], used: set[str]) -> dict[str, float]:
    """Gemma 2 has one RoPE for all layers, Gemma 3 and OLMo 3 one per layer type; only used layer types must be
    modelled."""
    by_type = arch in ("gemma3", "olmo3")
    per_type = params if by_type else {HF_LAYER_TYPE[LOCAL]: params, HF_LAYER_TYPE[GLOBAL]: params}
    out: dict[str, float] = {}
    for ours, field in ((LOCAL, "rope_base_local"), (GLOBAL, "rope_base_global")):
        hf_type = HF_LAYER_TYPE[ours]
        p = per_type[hf_type]
        out[field] = float(p["rope_theta"])
        if ours not in used:
            continue
        kind = p.get("rope_type", "default")
        name = f"rope_parameters[{hf_type!r}]" if by_type else "rope_parameters"
        scaled = ROPE_KEYS if ours == GLOBAL else {"default": ROPE_KEYS["default"]}
        if kind not in scaled or set(p) - scaled[kind]:
            allowed = f"rope_type in {list(scaled)} with keys {sorted(set().union(*scaled.values()))}"
            raise _bad(
                name, p, allowed + (" (linear scaling is modelled on full_attention layers only)" * (ours == LOCAL))
            )
        if ours == GLOBAL and kind == "linear":
            out["rope_scaling_global"] = float(p["factor"])
    return out


def _check_fixed_hf_keys(values: dict[str, Any], fixed: dict[str, tuple[Any, ...]] = FIXED_HF_KEYS) -> None:
    for key, allowed in fixed.items():
        if values[key] not in allowed:
            raise _bad(key, values[key], " or ".join(map(repr, allowed)))


def _config_from_olmo3(values: dict[str, Any]) -> ModelConfig:
    """OLMo 3: sliding-window and full layers as `layer_types` says, RoPE per layer type, projection QK-norm."""
    _check_fixed_hf_keys(values, OLMO3_FIXED_HF_KEYS)
    unknown = sorted(set(values) - OLMO3_HF_KEYS - set(OLMO3_FIXED_HF_KEYS) - IGNORED_HF_KEYS)
    if unknown:
        raise ValueError(f"Olmo3Config: key(s) {unknown} have no counterpart in ModelConfig")
    layer_types = tuple(_our_layer_type(t) for t in values["layer_types"])
    window = values["sliding_window"]
    if window is None and LOCAL in layer_types:
        raise _bad("sliding_window", window, "an int >= 1 when layer_types has sliding_attention layers")
    if values["hidden_size"] % values["num_attention_heads"]:
        raise _bad("hidden_size", values["hidden_size"], f"a multiple of num_attention_heads="
                   f"{values['num_attention_heads']} (OLMo 3's head width is their quotient)")  # fmt: skip
    rope = _rope_from_hf("olmo3", values["rope_parameters"], set(layer_types))
    return ModelConfig(
        vocab_size=values["vocab_size"], d_model=values["hidden_size"], n_layers=values["num_hidden_layers"],
        n_heads=values["num_attention_heads"], n_kv_heads=values["num_key_value_heads"],
        mlp_hidden=values["intermediate_size"], max_seq_len=values["max_position_embeddings"],
        norm_eps=values["rms_norm_eps"], layer_pattern=layer_types, tie_embeddings=values["tie_word_embeddings"],
        init_std=values["initializer_range"], **({"window": window} if window is not None else {}), **rope,
        **OLMO3_FIXED_FIELDS,
    )  # fmt: skip


def _config_from_gemma4(values: dict[str, Any]) -> ModelConfig:
    """Gemma 4: per-layer-type head shapes come from `per_layer_config`, RoPE per type from `rope_parameters`."""
    _check_fixed_hf_keys(values)  # first: use_bidirectional_attention 'all' also adds a key, is_causal
    unknown = sorted(set(values) - GEMMA4_HF_KEYS - set(FIXED_HF_KEYS) - IGNORED_HF_KEYS)
    if unknown:
        raise ValueError(f"Gemma4TextConfig: key(s) {unknown} have no counterpart in ModelConfig")
    layer_types = tuple(_our_layer_type(t) for t in values["layer_types"])
    head_dim, n_kv = values["head_dim"], values["num_key_value_heads"]
    overrides = _gemma4_global_overrides(values["per_layer_config"] or {}, layer_types)
    global_head_dim = overrides.get("head_dim", head_dim)
    global_kv = overrides.get("num_key_value_heads", n_kv)
    rope = _gemma4_rope_from_hf(values["rope_parameters"], set(layer_types))
    ple = values["hidden_size_per_layer_input"] or 0
    ple_vocab = values["vocab_size_per_layer_input"] if ple else values["vocab_size"]
    moe = values["enable_moe_block"]
    if moe:
        for key in ("num_experts", "top_k_experts", "moe_intermediate_size"):
            if not isinstance(values[key], int):
                raise _bad(key, values[key], "an int when enable_moe_block is true")
    return ModelConfig(
        vocab_size=values["vocab_size"], d_model=values["hidden_size"], n_layers=values["num_hidden_layers"],
        n_heads=values["num_attention_heads"], n_kv_heads=n_kv, head_dim=head_dim,
        mlp_hidden=values["intermediate_size"], max_seq_len=values["max_position_embeddings"],
        norm_eps=values["rms_norm_eps"], layer_pattern=layer_types, window=values["sliding_window"],
        final_softcap=values["final_logit_softcapping"], tie_embeddings=values["tie_word_embeddings"],
        init_std=values["initializer_range"],
        head_dim_global=None if global_head_dim == head_dim else global_head_dim,
        n_kv_heads_global=None if global_kv == n_kv else global_kv,
        k_eq_v_global=values["attention_k_eq_v"], kv_shared_layers=values["num_kv_shared_layers"],
        double_wide_mlp=values["use_double_wide_mlp"], ple_dim=ple,
        ple_vocab_size=None if ple_vocab == values["vocab_size"] else ple_vocab,
        moe_experts=values["num_experts"] if moe else 0, **({
            "moe_top_k": values["top_k_experts"], "moe_hidden": values["moe_intermediate_size"]} if moe else {}),
        **rope, **GEMMA4_FIXED_FIELDS,
    )  # fmt: skip


def _gemma4_global_overrides(per_layer: dict[Any, dict[str, Any]], layer_types: tuple[str, ...]) -> dict[str, Any]:
    """The overrides `per_layer_config` gives every global layer, the same for all of them; local layers have none."""
    by_layer = {int(i): dict(o) for i, o in per_layer.items()}
    wanted = [by_layer.get(i, {}) for i, t in enumerate(layer_types) if t == GLOBAL]
    allowed = ("the same {'head_dim', 'num_key_value_heads'} overrides on every full_attention layer and none on "
               "sliding_attention layers")  # fmt: skip
    local = [i for i, t in enumerate(layer_types) if t == LOCAL and by_layer.get(i)]
    if local or any(o != wanted[0] or set(o) - {"head_dim", "num_key_value_heads"} for o in wanted):
        raise _bad("per_layer_config", per_layer, allowed)
    return wanted[0] if wanted else {}


def _gemma4_rope_from_hf(params: dict[str, Any], used: set[str]) -> dict[str, Any]:
    """Per layer type: default (whole head), linear (whole head, scaled) or proportional (a fraction, maybe scaled);
    scaling on global layers only, as `rope_scaling_global` models it."""
    out: dict[str, Any] = {}
    for ours in (LOCAL, GLOBAL):
        hf_type = HF_LAYER_TYPE[ours]
        p = params[hf_type]
        out["rope_base_local" if ours == LOCAL else "rope_base_global"] = float(p["rope_theta"])
        if ours not in used:
            continue
        kind = p.get("rope_type", "default")
        scaled = p.get("factor", 1.0) != 1.0
        if kind not in GEMMA4_ROPE_KEYS or set(p) - GEMMA4_ROPE_KEYS[kind] or (scaled and ours == LOCAL):
            raise _bad(
                f"rope_parameters[{hf_type!r}]", p,
                f"rope_type in {list(GEMMA4_ROPE_KEYS)} with their keys {GEMMA4_ROPE_KEYS} (a factor on "
                "full_attention layers only)",
            )  # fmt: skip
        fraction = float(p.get("partial_rotary_factor", 1.0)) if kind == "proportional" else 1.0
        if ours == LOCAL:
            out["rope_fraction"] = fraction
        else:
            out["rope_fraction_global"], out["rope_scaling_global"] = fraction, float(p.get("factor", 1.0))
    if out.get("rope_fraction_global") == out.get("rope_fraction", 1.0):
        out["rope_fraction_global"] = None  # canonical: the global fraction only where it differs
    return out


# config: ours -> HF -------------------------------------------------------------------------------------------
def config_to_hf(cfg: ModelConfig, arch: str | None = None) -> PreTrainedConfig:
    """The HF config for `cfg`: OLMo 3 for reordered (post-norm) blocks, Gemma 4 if it has the value norm, else
    Gemma 3 if it has QK-norm, else Gemma 2 (or as `arch` says); raises if inexpressible."""
    arch = _resolve_arch(cfg, arch)
    if arch == "gemma4":
        return _config_to_gemma4(cfg)
    if arch == "olmo3":
        return _config_to_olmo3(cfg)
    for field, required in FIXED_FIELDS.items():
        if getattr(cfg, field) != required:
            raise _bad(field, getattr(cfg, field), f"{required!r} (the only value Gemma models)")
    for f in dataclasses.fields(cfg):
        if f.name not in MAPPED_FIELDS | INIT_ONLY_FIELDS | set(FIXED_FIELDS) and getattr(cfg, f.name) != f.default:
            raise _bad(f.name, getattr(cfg, f.name), f"{f.default!r}, its default (no Gemma counterpart)")
    if cfg.qk_norm != (arch == "gemma3"):
        allowed = "'qk_norm' or 'softcap+qk_norm'" if arch == "gemma3" else "'none' or 'softcap'"
        raise _bad("attn_logit", cfg.attn_logit, f"{allowed} for {arch} (Gemma 3 always has QK-norm, Gemma 2 never)")
    scalar = cfg.query_pre_attn_scalar if cfg.query_pre_attn_scalar is not None else cfg.resolved_head_dim
    if scalar != int(scalar):
        raise _bad("query_pre_attn_scalar", scalar, "an integer (transformers stores it as int)")
    config_cls = ARCHS[arch][0]
    return config_cls(
        vocab_size=cfg.vocab_size, hidden_size=cfg.d_model, intermediate_size=cfg.mlp_hidden,
        num_hidden_layers=cfg.n_layers, num_attention_heads=cfg.n_heads, num_key_value_heads=cfg.n_kv_heads,
        head_dim=cfg.resolved_head_dim, max_position_embeddings=cfg.max_seq_len, initializer_range=cfg.init_std,
        rms_norm_eps=cfg.norm_eps, tie_word_embeddings=cfg.tie_embeddings, query_pre_attn_scalar=int(scalar),
        sliding_window=cfg.window, layer_types=[HF_LAYER_TYPE[t] for t in cfg.layer_types],
        attn_logit_softcapping=cfg.softcap, final_logit_softcapping=cfg.final_softcap,
        rope_parameters=_rope_to_hf(cfg, arch), hidden_activation="gelu_pytorch_tanh", attention_bias=False,
        attention_dropout=0.0,
    )  # fmt: skip


def _resolve_arch(cfg: ModelConfig, arch: str | None) -> str:
    inferred = "olmo3" if cfg.norm_placement == "reordered" else "gemma4" if cfg.v_norm else None
    arch = arch or inferred or ("gemma3" if cfg.qk_norm else "gemma2")
    if arch not in ARCHS:
        raise _bad("arch", arch, ", ".join(ARCHS))
    return arch


def _config_to_gemma4(cfg: ModelConfig) -> Gemma4TextConfig:
    for field, required in GEMMA4_FIXED_FIELDS.items():
        if getattr(cfg, field) != required:
            raise _bad(field, getattr(cfg, field), f"{required!r} (the only value Gemma 4 models)")
    unused = {"moe_top_k": not cfg.moe_experts, "moe_hidden": not cfg.moe_experts, "ple_vocab_size": not cfg.ple_dim}
    for f in dataclasses.fields(cfg):
        mapped = f.name in GEMMA4_MAPPED_FIELDS | INIT_ONLY_FIELDS and not unused.get(f.name, False)
        if not mapped and f.name not in GEMMA4_FIXED_FIELDS and getattr(cfg, f.name) != f.default:
            raise _bad(f.name, getattr(cfg, f.name), f"{f.default!r}, its default (no Gemma 4 counterpart here)")
    if cfg.layer_types[-1] != GLOBAL:
        raise _bad("layer_pattern", cfg.layer_pattern, "a pattern whose last layer is global, e.g. with "
                   "'+last_global' (transformers' Gemma 4 forces its last layer to full_attention)")  # fmt: skip
    if cfg.rope_scaling_type != "linear":
        raise _bad("rope_scaling_type", cfg.rope_scaling_type, "'linear' (Gemma 4's RoPE factor)")
    global_shape = {"head_dim": cfg.head_dim_for(GLOBAL)}
    if cfg.n_kv_heads_for(GLOBAL) != cfg.n_kv_heads:
        global_shape["num_key_value_heads"] = cfg.n_kv_heads_for(GLOBAL)
    moe = cfg.moe_experts > 0
    return Gemma4TextConfig(
        vocab_size=cfg.vocab_size, hidden_size=cfg.d_model, intermediate_size=cfg.mlp_hidden,
        num_hidden_layers=cfg.n_layers, num_attention_heads=cfg.n_heads, num_key_value_heads=cfg.n_kv_heads,
        head_dim=cfg.resolved_head_dim, max_position_embeddings=cfg.max_seq_len, initializer_range=cfg.init_std,
        rms_norm_eps=cfg.norm_eps, tie_word_embeddings=cfg.tie_embeddings, sliding_window=cfg.window,
        layer_types=[HF_LAYER_TYPE[t] for t in cfg.layer_types], final_logit_softcapping=cfg.final_softcap,
        rope_parameters=_gemma4_rope_to_hf(cfg), hidden_activation="gelu_pytorch_tanh", attention_bias=False,
        attention_dropout=0.0, vocab_size_per_layer_input=cfg.resolved_ple_vocab_size,
        hidden_size_per_layer_input=cfg.ple_dim, attention_k_eq_v=cfg.k_eq_v_global,
        num_kv_shared_layers=cfg.kv_shared_layers, use_double_wide_mlp=cfg.double_wide_mlp, enable_moe_block=moe,
        num_experts=cfg.moe_experts if moe else None, top_k_experts=cfg.moe_top_k if moe else None,
        moe_intermediate_size=cfg.resolved_moe_hidden if moe else None,
        per_layer_config={i: dict(global_shape) for i, t in enumerate(cfg.layer_types) if t == GLOBAL},
    )  # fmt: skip


def _config_to_olmo3(cfg: ModelConfig) -> Olmo3Config:
    for field, required in OLMO3_FIXED_FIELDS.items():
        value = getattr(cfg, field)
        if value != required and not (field == "head_dim" and value == cfg.d_model // cfg.n_heads):
            raise _bad(field, value, f"{required!r} (the only value OLMo 3 models)")
    for f in dataclasses.fields(cfg):
        known = OLMO3_MAPPED_FIELDS | INIT_ONLY_FIELDS | set(OLMO3_FIXED_FIELDS)
        if f.name not in known and getattr(cfg, f.name) != f.default:
            raise _bad(f.name, getattr(cfg, f.name), f"{f.default!r}, its default (no OLMo 3 counterpart)")
    return Olmo3Config(
        vocab_size=cfg.vocab_size, hidden_size=cfg.d_model, intermediate_size=cfg.mlp_hidden,
        num_hidden_layers=cfg.n_layers, num_attention_heads=cfg.n_heads, num_key_value_heads=cfg.n_kv_heads,
        max_position_embeddings=cfg.max_seq_len, initializer_range=cfg.init_std, rms_norm_eps=cfg.norm_eps,
        tie_word_embeddings=cfg.tie_embeddings, sliding_window=cfg.window,
        layer_types=[HF_LAYER_TYPE[t] for t in cfg.layer_types], rope_parameters=_rope_to_hf(cfg, "olmo3"),
        hidden_act="silu", attention_bias=False, attention_dropout=0.0,
    )  # fmt: skip


def _gemma4_rope_to_hf(cfg: ModelConfig) -> dict[str, Any]:
    local: dict[str, Any] = {"rope_type": "default", "rope_theta": cfg.rope_base_local}
    if cfg.rope_fraction != 1.0:
        local = {
            "rope_type": "proportional",
            "partial_rotary_factor": cfg.rope_fraction,
            "rope_theta": cfg.rope_base_local,
        }
    full: dict[str, Any] = {"rope_type": "proportional", "partial_rotary_factor": cfg.rope_fraction_for(GLOBAL),
                            "rope_theta": cfg.rope_base_global}  # fmt: skip
    if cfg.rope_scaling_global != 1.0:
        full["factor"] = cfg.rope_scaling_global
    return {HF_LAYER_TYPE[LOCAL]: local, HF_LAYER_TYPE[GLOBAL]: full}


def _rope_to_hf(cfg: ModelConfig, arch: str) -> dict[str, Any]:
    full: dict[str, Any] = {"rope_type": "default", "rope_theta": cfg.rope_base_global}
    if cfg.rope_scaling_global != 1.0:
        full = {"rope_type": "linear", "rope_theta": cfg.rope_base_global, "factor": cfg.rope_scaling_global}
    per_type = {HF_LAYER_TYPE[LOCAL]: {"rope_type": "default", "rope_theta": cfg.rope_base_local},
                HF_LAYER_TYPE[GLOBAL]: full}  # fmt: skip
    if arch in ("gemma3", "olmo3"):
        return per_type
    used = [per_type[HF_LAYER_TYPE[t]] for t in sorted(set(cfg.layer_types))]
    if any(p != used[0] for p in used):
        raise ValueError(
            f"rope_base_local={cfg.rope_base_local}, rope_base_global={cfg.rope_base_global}, "
            f"rope_scaling_global={cfg.rope_scaling_global}: Gemma 2 has one RoPE for all layers; allowed: equal "
            "bases and rope_scaling_global=1.0 when both layer types are present (or use Gemma 3)"
        )
    return used[0]


# weights ------------------------------------------------------------------------------------------------------
_MODEL_NAMES = {
    "embed.weight": "model.embed_tokens.weight", "final_norm.weight": "model.norm.weight",
    "lm_head.weight": "lm_head.weight", "ple.embed.weight": "model.embed_tokens_per_layer.weight",
    "ple.proj.weight": "model.per_layer_model_projection.weight",
    "ple.norm.weight": "model.per_layer_projection_norm.weight",
}  # fmt: skip
_LAYER_NAMES = {
    "attn.": "self_attn.", "attn_pre_norm.": "input_layernorm.", "attn_post_norm.": "post_attention_layernorm.",
    "mlp_pre_norm.": "pre_feedforward_layernorm.", "mlp_post_norm.": "post_feedforward_layernorm.", "mlp.": "mlp.",
    "ple.gate.": "per_layer_input_gate.", "ple.proj.": "per_layer_projection.",
    "ple.norm.": "post_per_layer_input_norm.",
    "moe.router.": "router.", "moe.experts.": "experts.", "moe.dense_post_norm.": "post_feedforward_layernorm_1.",
    "moe.pre_norm.": "pre_feedforward_layernorm_2.", "moe.post_norm.": "post_feedforward_layernorm_2.",
    "layer_scalar": "layer_scalar",
}  # fmt: skip
QKV = ("q_proj", "k_proj", "v_proj")


def hf_names(name: str, qkv: tuple[str, ...] = QKV) -> list[str]:
    """HF names of one of our parameters, in the order its rows hold them: blocks.3.attn_pre_norm.weight ->
    [model.layers.3.input_layernorm.weight]; a fused projection has several (blocks.0.attn.qkv_proj.weight ->
    HF's q_proj, k_proj and v_proj weights, or the ones in `qkv`: its layer's `attn.parts`, fewer where K = V or
    the layer reuses another's KV)."""
    if name in _MODEL_NAMES:
        return [_MODEL_NAMES[name]]
    match = re.fullmatch(r"blocks\.(\d+)\.(.*)", name)
    ours = next((k for k in _LAYER_NAMES if match.group(2).startswith(k)), None) if match else None
    if ours is None:
        raise ValueError(f"parameter {name!r} has no transformers counterpart")
    rest = match.group(2)
    hf = f"model.layers.{match.group(1)}.{_LAYER_NAMES[ours]}{rest[len(ours) :]}"
    if rest.startswith("attn.qkv_proj."):
        return [hf.replace("qkv_proj.", f"{part}.") for part in qkv]
    if rest.startswith("mlp.gate_up_proj."):
        return [hf.replace("gate_up_proj.", f"{part}.") for part in ("gate_proj", "up_proj")]
    return [hf]


def _names_of(model: Transformer) -> Any:
    """`hf_names` for the parameters of `model`, each layer's fused attention projection split as it holds it."""
    parts = [block.attn.parts for block in model.blocks]

    def names(name: str) -> list[str]:
        layer = re.match(r"blocks\.(\d+)\.", name)
        return hf_names(name, parts[int(layer.group(1))]) if layer else hf_names(name)

    return names


def _copy_weights(src: dict[str, torch.Tensor], dst: torch.nn.Module, names_of: Any, tied: bool) -> None:
    """Copy every parameter of `dst` from `src` by mapped names (several: concatenated along dim 0); a source
    tensor left unused is an error."""
    used = set()
    for name, tensor in dst.state_dict().items():
        if tied and name == "lm_head.weight":
            continue  # shares storage with the embedding
        sources = names_of(name)
        missing = [s for s in sources if s not in src]
        if missing:
            raise ValueError(f"weight {missing[0]!r} (for {name!r}) is missing in the source model")
        tensor.copy_(torch.cat([src[s] for s in sources]) if len(sources) > 1 else src[sources[0]])
        used.update(sources)
    left = sorted(set(src) - used - ({"lm_head.weight"} if tied else set()))
    if left:
        raise ValueError(f"source weights {left} have no counterpart in the target model")


@torch.no_grad()
def from_hf(model: torch.nn.Module) -> Transformer:
    """Our model with the config and weights of a `Gemma2ForCausalLM` / `Gemma3ForCausalLM` / `Gemma4ForCausalLM` /
    `Olmo3ForCausalLM`, in its dtype."""
    if type(model) not in {cls for _, cls in ARCHS.values()}:
        raise _bad("model", type(model).__name__, ", ".join(cls.__name__ for _, cls in ARCHS.values()))
    cfg = config_from_hf(model.config)
    ours = build_model(cfg).to(device=model.device, dtype=model.dtype)
    _copy_weights(model.state_dict(), ours, _names_of(ours), cfg.tie_embeddings)
    return ours.eval()


@torch.no_grad()
def to_hf(model: Transformer, arch: str | None = None, attn_implementation: str = "eager") -> torch.nn.Module:
    """A `transformers` model computing the same function as `model` (see `config_to_hf` for `arch`)."""
    arch = _resolve_arch(model.cfg, arch)
    config = config_to_hf(model.cfg, arch)
    hf_cls = ARCHS[arch][1]
    param = model.embed.weight
    hf = hf_cls(config).to(device=param.device, dtype=param.dtype)
    hf.set_attn_implementation(attn_implementation)
    hf_state, ours, names_of = hf.state_dict(), {}, _names_of(model)
    for name, tensor in model.state_dict().items():
        names = names_of(name)
        pieces = tensor.split([hf_state[n].shape[0] for n in names]) if len(names) > 1 else (tensor,)
        ours.update(zip(names, pieces, strict=True))
    _copy_weights(ours, hf, lambda name: [name], model.cfg.tie_embeddings)
    return hf.eval()
