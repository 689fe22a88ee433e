"""The registry's promise: a new block variant is one registered class plus a config value, counted and trained."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tests.workbench.accounting_checks import check_accounting
from workbench import build_model, get_preset
from workbench.blocks.attention import attended_pairs, self_attention
from workbench.cache import LayerCache
from workbench.config import ModelConfig
from workbench.registry import ATTENTION, MLP, POSITION, Registry

CFG = get_preset("tiny").replace(d_model=32, n_layers=3, n_heads=4, n_kv_heads=2, mlp_hidden=48, layer_pattern="2:1",
                                 window=4, max_seq_len=64)  # fmt: skip


def test_unknown_name_lists_registered():
    reg = Registry("widget")
    reg.register("a")(int)
    with pytest.raises(ValueError, match="unknown widget 'b'; registered: a"):
        reg.build("b")


def test_duplicate_registration_is_an_error():
    reg = Registry("widget")
    reg.register("a")(int)
    with pytest.raises(ValueError, match="already registered"):
        reg.register("a")(float)


@pytest.fixture
def register():
    """Register variants for one test; they are removed after it."""
    added: list[tuple[Registry, str]] = []

    def add(registry: Registry, name: str, builder) -> None:
        registry.register(name)(builder)
        added.append((registry, name))

    yield add
    for registry, name in added:
        registry.unregister(name)


class FusedNoOutAttention(nn.Module):
    """GQA with one fused q/k/v matrix and no output projection (the heads' concatenation is the output)."""

    def __init__(self, cfg: ModelConfig, local: bool) -> None:
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = cfg.n_heads, cfg.n_kv_heads, cfg.resolved_head_dim
        self.window = cfg.window if local else None
        self.qkv = nn.Linear(cfg.d_model, (self.n_heads + 2 * self.n_kv_heads) * self.head_dim, bias=False)
        self.rope = POSITION.build(cfg.position, self.head_dim, cfg, local)

    def forward(self, x: torch.Tensor, positions: torch.Tensor, cache: LayerCache | None = None) -> torch.Tensor:
        B, T, _ = x.shape
        heads = self.qkv(x).view(B, T, -1, self.head_dim).transpose(1, 2)
        q, k, v = heads.split((self.n_heads, self.n_kv_heads, self.n_kv_heads), dim=1)
        q, k = self.rope(q, k, positions)
        k_pos = positions
        if cache is not None:
            k, v, k_pos = cache.update(k, v)
        out = self_attention(q, k, v, positions, k_pos, self.window, self.head_dim**-0.5, None, 0.0)
        return out.transpose(1, 2).reshape(B, T, -1)

    def new_cache(self, batch_size: int, max_len: int, dtype: torch.dtype, device: torch.device) -> LayerCache:
        shape = (batch_size, self.n_kv_heads, self.cached_slots(max_len), self.head_dim)
        return LayerCache(shape, shape, dtype=dtype, device=device)

    def cached_slots(self, context: int) -> int:
        return context if self.window is None else min(self.window, context)

    def kv_bytes_per_token(self, dtype: torch.dtype) -> int:
        return 2 * self.n_kv_heads * self.head_dim * dtype.itemsize

    def pair_flops(self, tokens: int, start: int = 0) -> int:
        return 2 * 2 * self.head_dim * self.n_heads * attended_pairs(tokens, self.window, start)

    def flops(self, tokens: int, start: int = 0) -> int:
        return 2 * tokens * self.qkv.weight.numel() + self.pair_flops(tokens, start)


class BilinearMLP(nn.Module):
    """down(gate(x) * up(x)) with no activation: three matrices, two of them fused (a gated kind by another name)."""

    def __init__(self, d_model: int, hidden: int, bias: bool) -> None:
        super().__init__()
        self.gate_up = nn.Linear(d_model, 2 * hidden, bias=bias)
        self.down = nn.Linear(hidden, d_model, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up(x).chunk(2, dim=-1)
        return self.down(gate * up)

    def flops(self, tokens: int) -> int:
        return 2 * tokens * (self.gate_up.weight.numel() + self.down.weight.numel())


def train_two_steps(cfg: ModelConfig) -> nn.Module:
    """Two AdamW steps on one batch: the loss is finite and falls, and every parameter moves."""
    model = build_model(cfg)
    before = [p.detach().clone() for p in model.parameters()]
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    ids = torch.randint(0, cfg.vocab_size, (4, 17))
    losses = []
    for _ in range(2):
        loss = F.cross_entropy(model(ids[:, :-1]).flatten(0, 1), ids[:, 1:].flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(map(math.isfinite, losses)) and losses[1] < losses[0], losses
    assert all(not torch.equal(a, p) for a, p in zip(before, model.parameters(), strict=True))
    return model


@pytest.mark.parametrize(
    ("registry", "builder", "field"),
    [(ATTENTION, FusedNoOutAttention, "attention"), (MLP, BilinearMLP, "mlp")],
    ids=["attention", "mlp"],
)
def test_new_kind_trains_and_is_counted_with_no_edit_elsewhere(register, registry, builder, field):
    register(registry, f"test-{field}", builder)
    cfg = CFG.replace(**{field: f"test-{field}"})
    model = train_two_steps(cfg)
    assert all(isinstance(getattr(b, "attn" if field == "attention" else "mlp"), builder) for b in model.blocks)
    check_accounting(cfg, model)  # parameters, KV bytes and FLOPs as the trained model has and computes them


def test_kind_without_its_accounting_fails_when_built(register):
    class ScaleMLP(nn.Module):
        def __init__(self, d_model: int, hidden: int, bias: bool) -> None:
            super().__init__()
            self.scale = nn.Parameter(torch.zeros(1))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * self.scale

    register(MLP, "test-scale", ScaleMLP)
    with pytest.raises(TypeError, match="mlp 'test-scale' builds a ScaleMLP without flops"):
        build_model(CFG.replace(mlp="test-scale"))


def test_unregister_removes_the_name():
    reg = Registry("widget")
    reg.register("a")(int)
    reg.unregister("a")
    assert "a" not in reg and reg.names() == []
    with pytest.raises(ValueError, match="unknown widget 'a'"):
        reg.unregister("a")
