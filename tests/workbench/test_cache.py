"""The KV cache: measured bytes equal `workbench.accounting`, overflow errors, and the window at inference."""

import json

import pytest
import torch

from analysis.kv_cache import main
from tests.numerics import assert_close_to_reference, tolerance, transformer_terms
from workbench import build_model, get_preset
from workbench.accounting import DTYPES, kv_cache_bytes, kv_cache_bytes_per_layer
from workbench.cache import SharedLayerCache

WINDOW = 8


def small_cfg(pattern: str, **overrides):
    base = dict(d_model=32, n_layers=6, n_heads=4, n_kv_heads=2, head_dim=12, mlp_hidden=64, window=WINDOW)
    return get_preset("tiny").replace(layer_pattern=pattern, **{**base, **overrides})


@pytest.mark.parametrize("pattern", ["global", "1:1", "5:1"])
@pytest.mark.parametrize(("batch", "context", "dtype"), [(1, 3, "float32"), (2, 8, "bfloat16"), (3, 100, "float16")])
def test_measured_bytes_equal_computed(pattern, batch, context, dtype):
    cfg = small_cfg(pattern)
    cache = build_model(cfg).new_cache(batch, context, dtype=DTYPES[dtype])
    assert cache.nbytes == kv_cache_bytes(cfg, context, batch, dtype)
    assert [layer.nbytes for layer in cache.layers] == kv_cache_bytes_per_layer(cfg, context, batch, dtype)


def test_local_layers_stop_growing_past_the_window():
    model = build_model(small_cfg("1:1"))
    sizes = {ctx: [layer.nbytes for layer in model.new_cache(1, ctx).layers] for ctx in (4, WINDOW, 2 * WINDOW, 64)}
    for i, layer_type in enumerate(model.cfg.layer_types):
        grown = [sizes[ctx][i] for ctx in (4, WINDOW, 2 * WINDOW, 64)]
        per_token = grown[0] // 4
        expected = [per_token * (min(c, WINDOW) if layer_type == "local" else c) for c in (4, WINDOW, 2 * WINDOW, 64)]
        assert grown == expected, layer_type
    assert sizes[2 * WINDOW][0] == sizes[64][0] < sizes[64][1]


@pytest.mark.parametrize("pattern", ["global", "1:1", "local"])
def test_request_beyond_the_cache_raises(pattern):
    """All-local too: a cache of 6 tokens with a window of 8 cannot drop any, so token 7 does not fit."""
    model = build_model(small_cfg(pattern)).eval()
    cache = model.new_cache(1, 6)
    with torch.no_grad():
        model(torch.randint(0, 264, (1, 4)), cache)
        with pytest.raises(ValueError, match="KV cache overflow: 4 cached \\+ 3 new tokens exceed the cache length 6"):
            model(torch.randint(0, 264, (1, 3)), cache)
        model(torch.randint(0, 264, (1, 2)), cache)
    assert cache.length == 6


def test_cli_measure_on_tiny(capsys):
    main(["tiny", "--context", "300", "--measure", "--json"])
    out = json.loads(capsys.readouterr().out)
    # 256 bytes per token and layer (2 KV heads x 32 x K, V in bf16): 5 local layers hold 64 tokens, 1 global 300
    assert out["bytes_measured"] == out["bytes"] == 256 * (5 * 64 + 300)
    main(["tiny", "--context", "300", "--measure"])
    assert "True" in capsys.readouterr().out


# window at inference (Gemma 2 Table 10: trained at 4096, evaluated at 2048 and 1024) ---------------------------
@pytest.mark.numerics
def test_smaller_window_changes_logits_only_from_that_position():
    model = build_model(small_cfg("1:1")).eval()
    x = torch.randint(0, 264, (2, 3 * WINDOW))
    with torch.no_grad():
        trained = model(x)
        model.set_window(WINDOW // 2)
        smaller = model(x)
    diff = (trained - smaller).abs().amax(dim=(0, 2))
    rounding = tolerance(trained, torch.float32, transformer_terms(model.cfg, x.shape[1]))
    assert torch.all(diff[: WINDOW // 2] <= rounding)  # rounding only: the kernels differ by window
    assert torch.all(diff[WINDOW // 2 :] > 1e-3)


@pytest.mark.numerics
def test_cache_after_set_window_is_smaller_and_exact():
    model = build_model(small_cfg("5:1")).eval()
    before = model.new_cache(2, 40).nbytes
    model.set_window(3)
    cache = model.new_cache(2, 40)
    assert cache.nbytes == kv_cache_bytes(model.cfg, 40, 2, "float32") < before  # model.cfg says the new window
    x = torch.randint(0, 264, (2, 20))
    with torch.no_grad():
        full = model(x)
        stepped = torch.cat([model(x[:, i : i + 1], cache) for i in range(20)], dim=1)
    assert_close_to_reference(stepped, full, terms=transformer_terms(model.cfg, x.shape[1]))


def test_cache_sized_for_a_smaller_window_is_rejected():
    model = build_model(small_cfg("1:1")).eval()
    model.set_window(2)
    cache = model.new_cache(1, 20)
    model.set_window(WINDOW)
    with pytest.raises(ValueError, match="window: layer 0 attends over 8 keys but its cache holds 2"):
        model(torch.randint(0, 264, (1, 3)), cache)


# Gemma 4's layouts: per-type KV shapes, K = V (one tensor), KV-shared layers (no cache) --------------------------
GEMMA4_LAYOUTS = {
    "per-type heads": dict(head_dim_global=24, n_kv_heads_global=1),
    "k=v": dict(head_dim_global=24, n_kv_heads_global=1, k_eq_v_global=True, v_norm=True),
    "shared 2": dict(kv_shared_layers=2),
    "shared 4, k=v, ple, moe": dict(kv_shared_layers=4, k_eq_v_global=True, v_norm=True, ple_dim=4, moe_experts=3,
                                    moe_top_k=2, moe_hidden=16, double_wide_mlp=True, layer_scalar=True),
}  # fmt: skip


def gemma4_cfg(layout: str):
    """6 layers L G L G L G (every sharing depth up to 4 leaves a layer of each type to reuse), window 8."""
    return small_cfg("1:1", rope_fraction_global=0.5, rope_partial="proportional", **GEMMA4_LAYOUTS[layout])


@pytest.mark.parametrize("layout", list(GEMMA4_LAYOUTS))
@pytest.mark.parametrize(("batch", "context", "dtype"), [(1, 3, "float32"), (3, 100, "bfloat16")])
def test_gemma4_layouts_measured_bytes_equal_computed(layout, batch, context, dtype):
    cfg = gemma4_cfg(layout)
    cache = build_model(cfg).new_cache(batch, context, dtype=DTYPES[dtype])
    assert [layer.nbytes for layer in cache.layers] == kv_cache_bytes_per_layer(cfg, context, batch, dtype)
    assert cache.nbytes == kv_cache_bytes(cfg, context, batch, dtype)


@pytest.mark.parametrize("depth", [1, 2, 4])
def test_shared_layers_allocate_nothing(depth):
    cfg = gemma4_cfg("per-type heads")
    own = build_model(cfg).new_cache(2, 50).layers
    shared = build_model(cfg.replace(kv_shared_layers=depth)).new_cache(2, 50).layers
    assert all(layer.nbytes == 0 for layer in shared[-depth:]) and not any(isinstance(x, SharedLayerCache) for x in own)
    assert [layer.nbytes for layer in shared[:-depth]] == [layer.nbytes for layer in own[:-depth]]
    assert all(layer.nbytes > 0 for layer in own[-depth:])


def test_keys_equal_values_cache_one_tensor():
    cfg = gemma4_cfg("per-type heads")
    both = build_model(cfg).new_cache(1, 30).layers
    one = build_model(cfg.replace(k_eq_v_global=True)).new_cache(1, 30).layers
    for layer_type, a, b in zip(cfg.layer_types, both, one, strict=True):
        assert b.nbytes == (a.nbytes // 2 if layer_type == "global" else a.nbytes), layer_type
        assert (b.v is None) == (layer_type == "global")


@pytest.mark.parametrize("layout", list(GEMMA4_LAYOUTS))
@pytest.mark.parametrize("chunks", [[1] * 22, [7, 1, 1, 5, 3, 1, 4]], ids=["token-by-token", "prefill+chunks"])
@pytest.mark.numerics
def test_gemma4_layouts_decode_equals_the_full_forward(layout, chunks):
    """22 tokens, window 8: local ring buffers wrap, shared layers read what their source layer's cache returned."""
    model = build_model(gemma4_cfg(layout)).eval()
    with torch.no_grad():  # norms and layer scalars away from 1, so that every part of the computation matters
        for p in model.parameters():
            if p.dim() == 1:
                p.uniform_(0.5, 1.5)
        for name, b in model.named_buffers():
            if name.endswith("layer_scalar"):
                b.uniform_(0.5, 1.5)
    x = torch.randint(0, 264, (2, sum(chunks)))
    cache = model.new_cache(2, x.shape[1])
    with torch.no_grad():
        full = model(x)
        starts = [sum(chunks[:i]) for i in range(len(chunks))]
        stepped = torch.cat([model(x[:, s : s + n], cache) for s, n in zip(starts, chunks, strict=True)], dim=1)
    assert_close_to_reference(stepped, full, terms=transformer_terms(model.cfg, x.shape[1]))
