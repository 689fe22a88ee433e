"""`ModelConfig`: one dataclass that describes every architecture the workbench builds.

The model reads values from it, never model names. `validate()` runs before any tensor is allocated and
rejects every bad value with a `ValueError` that names the field, the value given and what is allowed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

ATTN_LOGIT_CONTROLS = ("none", "softcap", "qk_norm", "softcap+qk_norm")
NORM_PLACEMENTS = ("pre", "post", "sandwich")


@dataclass(frozen=True)
class ModelConfig:
    # sizes
    vocab_size: int = 264
    d_model: int = 128
    n_layers: int = 6
    n_heads: int = 4
    n_kv_heads: int = 2
    head_dim: int | None = None  # None: d_model // n_heads
    mlp_hidden: int = 512
    max_seq_len: int = 256  # the training context; the KV cache may be allocated longer
    # block choices (registry names)
    attention: str = "mha"
    attention_global: str | None = None  # attention kind on global layers; None: the same as `attention`
    mlp: str = "geglu"
    norm: str = "gemma_rmsnorm"
    position: str = "rope"
    # structure
    norm_placement: str = "sandwich"
    norm_eps: float = 1e-6
    layer_pattern: str | tuple[str, ...] = "5:1"
    window: int = 64  # keys visible to a local layer, the current token included
    # attention logits
    attn_logit: str = "qk_norm"
    attn_softcap: float = 50.0  # used when attn_logit includes "softcap"
    final_softcap: float | None = None
    query_pre_attn_scalar: float | None = None  # None: head_dim; attention scale is its inverse square root
    # rope
    rope_base_global: float = 1_000_000.0
    rope_base_local: float = 10_000.0
    rope_scaling_global: float = 1.0  # context-extension factor on global layers (1: none)
    rope_scaling_type: str = "linear"  # linear (position interpolation), ntk, yarn
    rope_original_context: int | None = None  # YaRN: the pre-training context; None: max_seq_len
    rope_fraction: float = 1.0
    # multi-head latent attention (attention "mla"): cached latent width and decoupled RoPE key width
    mla_latent_dim: int = 64
    mla_rope_dim: int = 16
    # embeddings and the rest
    tie_embeddings: bool = True
    embed_scale: bool = True  # multiply embeddings by sqrt(d_model)
    bias: bool = False
    dropout: float = 0.0
    init_std: float = 0.02

    def __post_init__(self) -> None:
        if isinstance(self.layer_pattern, list):
            object.__setattr__(self, "layer_pattern", tuple(self.layer_pattern))
        self.validate()

    # derived values --------------------------------------------------------------------------------------
    @property
    def resolved_head_dim(self) -> int:
        return self.head_dim if self.head_dim is not None else self.d_model // self.n_heads

    @property
    def attn_scale(self) -> float:
        scalar = self.query_pre_attn_scalar if self.query_pre_attn_scalar is not None else self.resolved_head_dim
        return scalar**-0.5

    def attention_for(self, layer_type: str) -> str:
        """The registered attention kind used on layers of `layer_type` ('local' or 'global')."""
        return self.attention_global if layer_type == "global" and self.attention_global else self.attention

    @property
    def layer_types(self) -> tuple[str, ...]:
        from workbench.blocks.patterns import resolve_layer_types

        return resolve_layer_types(self.layer_pattern, self.n_layers)

    @property
    def qk_norm(self) -> bool:
        return "qk_norm" in self.attn_logit

    @property
    def softcap(self) -> float | None:
        return self.attn_softcap if "softcap" in self.attn_logit else None

    # construction ----------------------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> ModelConfig:
        """Build from a plain mapping (YAML, Hydra); unknown keys are an error that lists the allowed ones."""
        allowed = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(values) - set(allowed))
        if unknown:
            raise ValueError(f"model config: unknown key(s) {unknown}; allowed keys: {', '.join(allowed)}")
        return cls(**dict(values))

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        if isinstance(out["layer_pattern"], tuple):
            out["layer_pattern"] = list(out["layer_pattern"])
        return out

    def replace(self, **changes: Any) -> ModelConfig:
        return dataclasses.replace(self, **changes)

    # validation ------------------------------------------------------------------------------------------
    def validate(self) -> None:
        from workbench import blocks  # noqa: F401  (fills the registries)
        from workbench.blocks.position import ROPE_SCALING_TYPES
        from workbench.registry import ATTENTION, MLP, NORM, POSITION

        self._check_types()
        for name in ("vocab_size", "d_model", "n_layers", "n_heads", "n_kv_heads", "mlp_hidden", "max_seq_len"):
            _positive(name, getattr(self, name))
        if self.head_dim is not None:
            _positive("head_dim", self.head_dim)
        elif self.d_model % self.n_heads:
            raise ValueError(
                f"head_dim: got None, and d_model={self.d_model} is not divisible by n_heads={self.n_heads}; "
                "set head_dim explicitly or choose n_heads dividing d_model"
            )
        if self.n_heads % self.n_kv_heads:
            raise ValueError(
                f"n_kv_heads: got {self.n_kv_heads}, but n_heads={self.n_heads} must be divisible by it; "
                f"allowed: {[k for k in range(1, self.n_heads + 1) if self.n_heads % k == 0]}"
            )
        for name, registry in (("attention", ATTENTION), ("mlp", MLP), ("norm", NORM), ("position", POSITION)):
            _choice(name, getattr(self, name), registry.names())
        if self.attention_global is not None:
            _choice("attention_global", self.attention_global, ATTENTION.names())
        _positive("mla_latent_dim", self.mla_latent_dim)
        _positive("mla_rope_dim", self.mla_rope_dim)
        if self.mla_rope_dim % 2:
            raise ValueError(f"mla_rope_dim: got {self.mla_rope_dim}; allowed: an even value > 0")
        _choice("norm_placement", self.norm_placement, NORM_PLACEMENTS)
        _choice("attn_logit", self.attn_logit, ATTN_LOGIT_CONTROLS)
        _positive("window", self.window)
        _positive("norm_eps", self.norm_eps)
        _positive("attn_softcap", self.attn_softcap)
        if self.final_softcap is not None:
            _positive("final_softcap", self.final_softcap)
        if self.query_pre_attn_scalar is not None:
            _positive("query_pre_attn_scalar", self.query_pre_attn_scalar)
        _positive("rope_base_global", self.rope_base_global)
        _positive("rope_base_local", self.rope_base_local)
        _positive("rope_scaling_global", self.rope_scaling_global)
        _choice("rope_scaling_type", self.rope_scaling_type, ROPE_SCALING_TYPES)
        if self.rope_original_context is not None:
            _positive("rope_original_context", self.rope_original_context)
        _positive("init_std", self.init_std)
        rot_dim = self.resolved_head_dim * self.rope_fraction
        if not 0 < self.rope_fraction <= 1 or rot_dim != int(rot_dim) or int(rot_dim) % 2:
            raise ValueError(
                f"rope_fraction: got {self.rope_fraction}; allowed: 0 < fraction <= 1 with "
                f"head_dim * fraction an even integer (head_dim={self.resolved_head_dim})"
            )
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout: got {self.dropout}; allowed: 0 <= dropout < 1")
        self.layer_types  # noqa: B018  (raises on a bad layer_pattern)

    def _check_types(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            expected = _EXPECTED_TYPES[f.name]
            ok = isinstance(value, expected) and not (isinstance(value, bool) and bool not in _as_tuple(expected))
            if not ok:
                raise ValueError(
                    f"{f.name}: got {value!r} of type {type(value).__name__}; expected {_type_names(expected)}"
                )


_INT, _FLOAT = (int,), (int, float)
_EXPECTED_TYPES: dict[str, Any] = {
    "vocab_size": _INT, "d_model": _INT, "n_layers": _INT, "n_heads": _INT, "n_kv_heads": _INT,
    "head_dim": (int, type(None)), "mlp_hidden": _INT, "max_seq_len": _INT,
    "attention": str, "attention_global": (str, type(None)), "mla_latent_dim": _INT, "mla_rope_dim": _INT,
    "mlp": str, "norm": str, "position": str, "norm_placement": str,
    "norm_eps": _FLOAT, "layer_pattern": (str, tuple), "window": _INT, "attn_logit": str,
    "attn_softcap": _FLOAT, "final_softcap": (int, float, type(None)),
    "query_pre_attn_scalar": (int, float, type(None)),
    "rope_base_global": _FLOAT, "rope_base_local": _FLOAT, "rope_scaling_global": _FLOAT, "rope_fraction": _FLOAT,
    "rope_scaling_type": str, "rope_original_context": (int, type(None)),
    "tie_embeddings": bool, "embed_scale": bool, "bias": bool, "dropout": _FLOAT, "init_std": _FLOAT,
}  # fmt: skip


def _as_tuple(types: Any) -> tuple[type, ...]:
    return types if isinstance(types, tuple) else (types,)


def _type_names(types: Any) -> str:
    return " or ".join("None" if t is type(None) else t.__name__ for t in _as_tuple(types))


def _positive(name: str, value: float) -> None:
    if not value > 0:
        raise ValueError(f"{name}: got {value!r}; allowed: a value > 0")


def _choice(name: str, value: str, allowed: Any) -> None:
    if value not in allowed:
        raise ValueError(f"{name}: got {value!r}; allowed: {', '.join(map(str, allowed))}")
