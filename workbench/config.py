"""`ModelConfig`: one dataclass that describes every architecture the workbench builds.

The model reads values from it, never model names. `validate()` runs before any tensor is allocated and
rejects every bad value with a `ValueError` that names the field, the value given and what is allowed.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from workbench.blocks.patterns import GLOBAL, LOCAL

ATTN_LOGIT_CONTROLS = ("none", "softcap", "qk_norm", "softcap+qk_norm")
NORM_PLACEMENTS = ("pre", "post", "sandwich", "reordered")
QK_NORM_SCOPES = ("head", "projection")
ATTN_GATES = ("none", "headwise", "elementwise")
SCALED_POST_NORM = "scaled"  # `post_norm_init`'s name for the gain 1/sqrt(2 n_layers)


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
    qk_norm_scope: str = "head"  # QK-norm over each head (Gemma 3, Qwen 3) or the whole projection (OLMo 2/3)
    attn_sinks: bool = False  # a learned logit per head in the softmax denominator (gpt-oss)
    attn_gate: str = "none"  # sigmoid gate on the attention output from the layer input: headwise or elementwise
    # rope
    rope_base_global: float = 1_000_000.0
    rope_base_local: float = 10_000.0
    rope_scaling_global: float = 1.0  # context-extension factor on global layers (1: none)
    rope_scaling_type: str = "linear"  # linear (position interpolation), ntk, yarn
    rope_original_context: int | None = None  # YaRN: the pre-training context; None: max_seq_len
    rope_fraction: float = 1.0  # of each head's dims that rotate (local layers, and global ones unless set below)
    rope_fraction_global: float | None = None  # on global layers, of head_dim_global; None: rope_fraction
    rope_partial: str = "leading"  # layout of a fraction < 1: leading dims, or proportional (Gemma 4)
    # per-layer-type attention shape (Gemma 4): global layers with their own head width and KV heads
    head_dim_global: int | None = None  # None: head_dim
    n_kv_heads_global: int | None = None  # None: n_kv_heads
    k_eq_v_global: bool = False  # global layers: the key projection's output is also the value (no v_proj)
    v_norm: bool = False  # values RMS-normalised, without a scale (Gemma 4)
    # cross-layer KV sharing: the last N layers reuse the keys/values of the last earlier layer of their type
    kv_shared_layers: int = 0
    double_wide_mlp: bool = False  # KV-shared layers' MLP is 2 x mlp_hidden wide
    # per-layer input embeddings (PLE): a ple_dim-wide signal per layer from the token id and the embedding
    ple_dim: int = 0  # 0: none
    ple_vocab_size: int | None = None  # rows of the per-layer table; None: vocab_size
    layer_scalar: bool = False  # each layer's output times a stored scalar (a buffer: 1 at init, checkpoints set it)
    # a mixture-of-experts block beside the dense MLP (Gemma 4): moe_top_k of moe_experts GeGLU experts per token
    moe_experts: int = 0  # 0: no MoE block
    moe_top_k: int = 2
    moe_hidden: int | None = None  # each expert's hidden width; None: mlp_hidden
    # multi-head latent attention (attention "mla"): cached latent width and decoupled RoPE key width
    mla_latent_dim: int = 64
    mla_rope_dim: int = 16
    # embeddings and the rest
    tie_embeddings: bool = True
    embed_scale: bool = True  # multiply embeddings by sqrt(d_model)
    bias: bool = False
    dropout: float = 0.0
    init_std: float = 0.02
    # the post-norms' gain at init: None, 1 (the identity, where HF's and the JAX Gemma code start: weight 0 in a
    # (1 + w) scale); "scaled", 1/sqrt(2 n_layers), the output projections' init scale, which a unit-gain sandwich
    # post-norm undoes (notebooks/norm_placement: unit gains 0.23 nats worse at 1M parameters, 120 steps); or a number
    post_norm_init: float | str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.layer_pattern, list):
            object.__setattr__(self, "layer_pattern", tuple(self.layer_pattern))
        self.validate()

    # derived values --------------------------------------------------------------------------------------
    @property
    def post_norm_gain(self) -> float:
        """The post-norms' gain at init: 1 for `post_norm_init` None (the reference Gemma and OLMo init),
        1/sqrt(2 n_layers) for "scaled", else the number given."""
        if self.post_norm_init is None:
            return 1.0
        if self.post_norm_init == SCALED_POST_NORM:
            return 1 / math.sqrt(2 * self.n_layers)
        return float(self.post_norm_init)

    @property
    def resolved_head_dim(self) -> int:
        return self.head_dim if self.head_dim is not None else self.d_model // self.n_heads

    @property
    def attn_scale(self) -> float:
        return self.attn_scale_for(LOCAL)

    def head_dim_for(self, layer_type: str) -> int:
        """Head width on layers of `layer_type` ('local' or 'global')."""
        if layer_type == GLOBAL and self.head_dim_global is not None:
            return self.head_dim_global
        return self.resolved_head_dim

    def n_kv_heads_for(self, layer_type: str) -> int:
        if layer_type == GLOBAL and self.n_kv_heads_global is not None:
            return self.n_kv_heads_global
        return self.n_kv_heads

    def attn_scale_for(self, layer_type: str) -> float:
        """1 / sqrt(query_pre_attn_scalar), that layer type's head width when it is None."""
        scalar = self.query_pre_attn_scalar if self.query_pre_attn_scalar is not None else self.head_dim_for(layer_type)
        return scalar**-0.5

    def rope_fraction_for(self, layer_type: str) -> float:
        if layer_type == GLOBAL and self.rope_fraction_global is not None:
            return self.rope_fraction_global
        return self.rope_fraction

    def k_eq_v_for(self, layer_type: str) -> bool:
        return self.k_eq_v_global and layer_type == GLOBAL

    def kv_shared(self, layer: int) -> bool:
        """Whether layer `layer` reuses an earlier layer's keys and values (the last `kv_shared_layers` do)."""
        return layer >= self.n_layers - self.kv_shared_layers

    @property
    def kv_shared_types(self) -> frozenset[str]:
        """Layer types whose keys/values some later layer reuses."""
        return frozenset(t for i, t in enumerate(self.layer_types) if self.kv_shared(i))

    def mlp_hidden_for(self, layer: int) -> int:
        return 2 * self.mlp_hidden if self.double_wide_mlp and self.kv_shared(layer) else self.mlp_hidden

    @property
    def resolved_moe_hidden(self) -> int:
        return self.moe_hidden if self.moe_hidden is not None else self.mlp_hidden

    @property
    def resolved_ple_vocab_size(self) -> int:
        return self.ple_vocab_size if self.ple_vocab_size is not None else self.vocab_size

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
        _choice("qk_norm_scope", self.qk_norm_scope, QK_NORM_SCOPES)
        if self.qk_norm_scope != "head" and not self.qk_norm:
            raise ValueError(f"qk_norm_scope: got {self.qk_norm_scope!r}; allowed: 'head' while attn_logit="
                             f"{self.attn_logit!r} has no QK-norm (the scope applies to 'qk_norm' and "
                             "'softcap+qk_norm')")  # fmt: skip
        _choice("attn_gate", self.attn_gate, ATTN_GATES)
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
        if self.post_norm_init is not None:
            _check_post_norm_init(self.post_norm_init)
            if self.norm == "rmsnorm_unscaled":
                raise ValueError(f"post_norm_init: got {self.post_norm_init}; allowed: null with norm "
                                 "'rmsnorm_unscaled' (a norm without a scale has no gain to set)")  # fmt: skip
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout: got {self.dropout}; allowed: 0 <= dropout < 1")
        self.layer_types  # noqa: B018  (raises on a bad layer_pattern)
        self._validate_layer_types()

    def _validate_layer_types(self) -> None:
        """The per-layer-type fields (Gemma 4's knobs), and that the attention kinds used read each one set."""
        from workbench.blocks.position import ROPE_PARTIAL_LAYOUTS

        if self.head_dim_global is not None:
            _positive("head_dim_global", self.head_dim_global)
        kv = self.n_kv_heads_global
        if kv is not None and (kv < 1 or self.n_heads % kv):
            raise ValueError(
                f"n_kv_heads_global: got {kv}; allowed: None or a divisor of n_heads={self.n_heads}: "
                f"{[k for k in range(1, self.n_heads + 1) if self.n_heads % k == 0]}"
            )
        _choice("rope_partial", self.rope_partial, ROPE_PARTIAL_LAYOUTS)
        for layer_type in (LOCAL, GLOBAL):
            fraction, head_dim = self.rope_fraction_for(layer_type), self.head_dim_for(layer_type)
            name = "rope_fraction_global" if layer_type == GLOBAL and self.rope_fraction_global is not None else None
            rot_dim = head_dim * fraction
            if fraction == 1 and head_dim % 2:  # the head width is what is odd: name where it comes from
                raise ValueError(self._odd_head_dim(layer_type, head_dim))
            if not 0 < fraction <= 1 or rot_dim != int(rot_dim) or int(rot_dim) % 2:
                raise ValueError(
                    f"{name or 'rope_fraction'}: got {fraction}; allowed: 0 < fraction <= 1 with head_dim * fraction "
                    f"an even integer (head_dim={head_dim} on {layer_type} layers)"
                )
        types = self.layer_types
        n_own = self.n_layers - self.kv_shared_layers
        if not 0 <= self.kv_shared_layers < self.n_layers:
            raise ValueError(
                f"kv_shared_layers: got {self.kv_shared_layers}; allowed: 0 <= N < n_layers={self.n_layers}"
            )
        orphans = sorted(self.kv_shared_types - set(types[:n_own]))
        if orphans:
            raise ValueError(
                f"kv_shared_layers: got {self.kv_shared_layers}; the shared layers {n_own}..{self.n_layers - 1} "
                f"include {orphans} layers but layers 0..{n_own - 1} have none to reuse; allowed: a depth that leaves "
                f"an earlier layer of every type it shares (layer types: {''.join(t[0].upper() for t in types)})"
            )
        if self.ple_dim < 0:
            raise ValueError(f"ple_dim: got {self.ple_dim}; allowed: 0 (no per-layer inputs) or a value > 0")
        if self.ple_vocab_size is not None and self.ple_vocab_size < self.vocab_size:
            raise ValueError(
                f"ple_vocab_size: got {self.ple_vocab_size}; allowed: None or >= vocab_size={self.vocab_size} "
                "(every token id needs a row)"
            )
        if self.moe_experts < 0:
            raise ValueError(f"moe_experts: got {self.moe_experts}; allowed: 0 (no MoE block) or a value > 0")
        if self.moe_experts and not 1 <= self.moe_top_k <= self.moe_experts:
            raise ValueError(f"moe_top_k: got {self.moe_top_k}; allowed: 1 <= k <= moe_experts={self.moe_experts}")
        if self.moe_hidden is not None:
            _positive("moe_hidden", self.moe_hidden)
        self._check_attention_reads()

    def _odd_head_dim(self, layer_type: str, head_dim: int) -> str:
        """The error for an odd head width on `layer_type` layers, naming the field that set it."""
        allowed = "an even head width (RoPE rotates pairs of dims)"
        if layer_type == GLOBAL and self.head_dim_global is not None:
            return f"head_dim_global: got {head_dim}; allowed: {allowed}"
        if self.head_dim is not None:
            return f"head_dim: got {head_dim}; allowed: {allowed}"
        return (
            f"d_model: got {self.d_model}, a head width d_model / n_heads = {head_dim} (n_heads={self.n_heads}); "
            f"allowed: a multiple of 2 x n_heads = {2 * self.n_heads}, or set head_dim to an even width"
        )

    def _check_attention_reads(self) -> None:
        """A field set away from its default must be read by the attention kind of the layers it is for: a kind
        lists what it reads in `config_fields` (MLA, for one, has its own head shape and caches a latent)."""
        from workbench.registry import ATTENTION

        used = set(self.layer_types)
        per_field = {
            "head_dim_global": {GLOBAL}, "n_kv_heads_global": {GLOBAL}, "k_eq_v_global": {GLOBAL},
            "rope_fraction_global": {GLOBAL}, "v_norm": used, "kv_shared_layers": self.kv_shared_types,
            "qk_norm_scope": used, "attn_sinks": used, "attn_gate": used,
        }  # fmt: skip
        for name, layer_types in per_field.items():
            value = getattr(self, name)
            if value == _DEFAULTS[name]:
                continue
            for layer_type in sorted(layer_types & used):
                kind = self.attention_for(layer_type)
                if name not in getattr(ATTENTION.get(kind), "config_fields", ()):
                    raise ValueError(
                        f"{name}: got {value!r}; allowed: {_DEFAULTS[name]!r} while {layer_type} layers use "
                        f"attention {kind!r}, which does not read it"
                    )

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
    "query_pre_attn_scalar": (int, float, type(None)), "qk_norm_scope": str, "attn_sinks": bool, "attn_gate": str,
    "rope_base_global": _FLOAT, "rope_base_local": _FLOAT, "rope_scaling_global": _FLOAT, "rope_fraction": _FLOAT,
    "rope_scaling_type": str, "rope_original_context": (int, type(None)),
    "tie_embeddings": bool, "embed_scale": bool, "bias": bool, "dropout": _FLOAT, "init_std": _FLOAT,
    "post_norm_init": (int, float, str, type(None)),
    "rope_fraction_global": (int, float, type(None)), "rope_partial": str, "head_dim_global": (int, type(None)),
    "n_kv_heads_global": (int, type(None)), "k_eq_v_global": bool, "v_norm": bool, "kv_shared_layers": _INT,
    "double_wide_mlp": bool, "ple_dim": _INT, "ple_vocab_size": (int, type(None)), "layer_scalar": bool,
    "moe_experts": _INT, "moe_top_k": _INT, "moe_hidden": (int, type(None)),
}  # fmt: skip
_DEFAULTS = {f.name: f.default for f in dataclasses.fields(ModelConfig)}


def _as_tuple(types: Any) -> tuple[type, ...]:
    return types if isinstance(types, tuple) else (types,)


def _type_names(types: Any) -> str:
    return " or ".join("None" if t is type(None) else t.__name__ for t in _as_tuple(types))


def _positive(name: str, value: float) -> None:
    if not value > 0:
        raise ValueError(f"{name}: got {value!r}; allowed: a value > 0")


def _check_post_norm_init(value: float | str) -> None:
    if value != SCALED_POST_NORM and (isinstance(value, str) or not value > 0):
        raise ValueError(f"post_norm_init: got {value!r}; allowed: null (unit gains, the reference init), "
                         f"{SCALED_POST_NORM!r} (1/sqrt(2 n_layers)) or a number > 0")  # fmt: skip


def _choice(name: str, value: str, allowed: Any) -> None:
    if value not in allowed:
        raise ValueError(f"{name}: got {value!r}; allowed: {', '.join(map(str, allowed))}")
