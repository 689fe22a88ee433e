"""Conversion to and from `transformers`' Gemma 2 and Gemma 3 text decoders (configs and weights).

Every field is either mapped, or checked to hold the one value the other side can express; anything else is a
`ValueError` naming the field, its value and what is allowed, so nothing is dropped silently. Only HF keys that
do not change the function the model computes (token ids, output flags, bookkeeping) are ignored, by name.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import torch
from transformers import Gemma2Config, Gemma2ForCausalLM, Gemma3ForCausalLM, Gemma3TextConfig, PreTrainedConfig

from workbench.blocks.patterns import GLOBAL, LOCAL
from workbench.config import ModelConfig
from workbench.model import Transformer, build_model

HF_LAYER_TYPE = {LOCAL: "sliding_attention", GLOBAL: "full_attention"}
OUR_LAYER_TYPE = {v: k for k, v in HF_LAYER_TYPE.items()}
ARCHS: dict[str, tuple[type[PreTrainedConfig], type]] = {
    "gemma2": (Gemma2Config, Gemma2ForCausalLM),
    "gemma3": (Gemma3TextConfig, Gemma3ForCausalLM),
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
# HF keys that must hold one value for us to model them (key -> allowed values).
FIXED_HF_KEYS = {"hidden_activation": ("gelu_pytorch_tanh",), "attention_bias": (False,),
                 "attention_dropout": (0, 0.0), "use_bidirectional_attention": (None, False)}  # fmt: skip
ROPE_KEYS = {"default": {"rope_type", "rope_theta"}, "linear": {"rope_type", "rope_theta", "factor"}}


def _bad(field: str, value: Any, allowed: str) -> ValueError:
    return ValueError(f"{field}: got {value!r}; allowed: {allowed}")


# config: HF -> ours -------------------------------------------------------------------------------------------
def config_from_hf(config: PreTrainedConfig) -> ModelConfig:
    """Our `ModelConfig` for a `Gemma2Config` or `Gemma3TextConfig`; unmodelled values raise."""
    arch = _arch_of_config(config)
    values = config.to_dict()
    mapped = {"vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
              "num_key_value_heads", "head_dim", "max_position_embeddings", "initializer_range", "rms_norm_eps",
              "tie_word_embeddings", "rope_parameters", "query_pre_attn_scalar", "sliding_window", "layer_types",
              "final_logit_softcapping", "attn_logit_softcapping", *FIXED_HF_KEYS}  # fmt: skip
    unknown = sorted(set(values) - mapped - IGNORED_HF_KEYS)
    if unknown:
        raise ValueError(f"{type(config).__name__}: key(s) {unknown} have no counterpart in ModelConfig")
    for key, allowed in FIXED_HF_KEYS.items():
        if values[key] not in allowed:
            raise _bad(key, values[key], " or ".join(map(repr, allowed)))
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
    raise ValueError(f"config: got {type(config).__name__}; allowed: Gemma2Config, Gemma3TextConfig{hint}")


def _our_layer_type(hf_type: str) -> str:
    if hf_type not in OUR_LAYER_TYPE:
        raise _bad("layer_types", hf_type, ", ".join(OUR_LAYER_TYPE))
    return OUR_LAYER_TYPE[hf_type]


def _rope_from_hf(arch: str, params: dict[str, Any], used: set[str]) -> dict[str, float]:
    """Gemma 2 has one RoPE for all layers, Gemma 3 one per layer type; only used layer types must be modelled."""
    per_type = params if arch == "gemma3" else {HF_LAYER_TYPE[LOCAL]: params, HF_LAYER_TYPE[GLOBAL]: params}
    out: dict[str, float] = {}
    for ours, field in ((LOCAL, "rope_base_local"), (GLOBAL, "rope_base_global")):
        hf_type = HF_LAYER_TYPE[ours]
        p = per_type[hf_type]
        out[field] = float(p["rope_theta"])
        if ours not in used:
            continue
        kind = p.get("rope_type", "default")
        name = f"rope_parameters[{hf_type!r}]" if arch == "gemma3" else "rope_parameters"
        scaled = ROPE_KEYS if ours == GLOBAL else {"default": ROPE_KEYS["default"]}
        if kind not in scaled or set(p) - scaled[kind]:
            allowed = f"rope_type in {list(scaled)} with keys {sorted(set().union(*scaled.values()))}"
            raise _bad(
                name, p, allowed + (" (linear scaling is modelled on full_attention layers only)" * (ours == LOCAL))
            )
        if ours == GLOBAL and kind == "linear":
            out["rope_scaling_global"] = float(p["factor"])
    return out


# config: ours -> HF -------------------------------------------------------------------------------------------
def config_to_hf(cfg: ModelConfig, arch: str | None = None) -> PreTrainedConfig:
    """The HF config for `cfg`: Gemma 3 if it has QK-norm, else Gemma 2 (or as `arch` says); raises if inexpressible."""
    arch = _resolve_arch(cfg, arch)
    for field, required in FIXED_FIELDS.items():
        if getattr(cfg, field) != required:
            raise _bad(field, getattr(cfg, field), f"{required!r} (the only value Gemma models)")
    for f in dataclasses.fields(cfg):
        if f.name not in MAPPED_FIELDS | set(FIXED_FIELDS) and getattr(cfg, f.name) != f.default:
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
    arch = arch or ("gemma3" if cfg.qk_norm else "gemma2")
    if arch not in ARCHS:
        raise _bad("arch", arch, ", ".join(ARCHS))
    return arch


def _rope_to_hf(cfg: ModelConfig, arch: str) -> dict[str, Any]:
    full: dict[str, Any] = {"rope_type": "default", "rope_theta": cfg.rope_base_global}
    if cfg.rope_scaling_global != 1.0:
        full = {"rope_type": "linear", "rope_theta": cfg.rope_base_global, "factor": cfg.rope_scaling_global}
    per_type = {HF_LAYER_TYPE[LOCAL]: {"rope_type": "default", "rope_theta": cfg.rope_base_local},
                HF_LAYER_TYPE[GLOBAL]: full}  # fmt: skip
    if arch == "gemma3":
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
_LAYER_NAMES = {
    "attn.": "self_attn.", "attn_pre_norm.": "input_layernorm.", "attn_post_norm.": "post_attention_layernorm.",
    "mlp_pre_norm.": "pre_feedforward_layernorm.", "mlp_post_norm.": "post_feedforward_layernorm.", "mlp.": "mlp.",
}  # fmt: skip


# our fused projections -> HF's separate ones, in the order of the fused rows
_FUSED = {"qkv_proj.": ("q_proj.", "k_proj.", "v_proj."), "gate_up_proj.": ("gate_proj.", "up_proj.")}


def hf_names(name: str) -> list[str]:
    """HF names of one of our parameters, in the order its rows hold them: blocks.3.attn_pre_norm.weight ->
    [model.layers.3.input_layernorm.weight]; a fused projection has several (blocks.0.attn.qkv_proj.weight ->
    HF's q_proj, k_proj and v_proj weights)."""
    if name in ("embed.weight", "final_norm.weight", "lm_head.weight"):
        return [{"embed.weight": "model.embed_tokens.weight", "final_norm.weight": "model.norm.weight"}.get(name, name)]
    match = re.fullmatch(r"blocks\.(\d+)\.(\w+\.)(.*)", name)
    if match is None or match.group(2) not in _LAYER_NAMES:
        raise ValueError(f"parameter {name!r} has no Gemma counterpart")
    hf = f"model.layers.{match.group(1)}.{_LAYER_NAMES[match.group(2)]}{match.group(3)}"
    fused = next((f for f in _FUSED if match.group(3).startswith(f)), None)
    return [hf] if fused is None else [hf.replace(fused, part) for part in _FUSED[fused]]


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
    """Our model with the config and weights of a `Gemma2ForCausalLM` / `Gemma3ForCausalLM`, in its dtype."""
    if type(model) not in {cls for _, cls in ARCHS.values()}:
        raise _bad("model", type(model).__name__, "Gemma2ForCausalLM, Gemma3ForCausalLM")
    cfg = config_from_hf(model.config)
    ours = build_model(cfg).to(device=model.device, dtype=model.dtype)
    _copy_weights(model.state_dict(), ours, hf_names, cfg.tie_embeddings)
    return ours.eval()


@torch.no_grad()
def to_hf(model: Transformer, arch: str | None = None, attn_implementation: str = "eager") -> torch.nn.Module:
    """A `transformers` Gemma model computing the same function as `model` (see `config_to_hf` for `arch`)."""
    arch = _resolve_arch(model.cfg, arch)
    config = config_to_hf(model.cfg, arch)
    hf_cls = ARCHS[arch][1]
    config._attn_implementation = attn_implementation
    param = model.embed.weight
    hf = hf_cls(config).to(device=param.device, dtype=param.dtype)
    hf_state, ours = hf.state_dict(), {}
    for name, tensor in model.state_dict().items():
        names = hf_names(name)
        pieces = tensor.split([hf_state[n].shape[0] for n in names]) if len(names) > 1 else (tensor,)
        ours.update(zip(names, pieces, strict=True))
    _copy_weights(ours, hf, lambda name: [name], model.cfg.tie_embeddings)
    return hf.eval()
