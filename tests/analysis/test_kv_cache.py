import json

import pytest

from analysis.kv_cache import kv_cache_bytes, kv_cache_bytes_all_global, kv_cache_bytes_per_layer, main
from workbench import get_preset
from workbench.accounting import kv_bytes_read_per_token

CTX = 32_768


def hand_computed(n_layers, n_global, n_kv, head_dim, window, ctx=CTX, nbytes=2):
    per_token = 2 * n_kv * head_dim * nbytes
    return per_token * (n_global * ctx + (n_layers - n_global) * min(ctx, window))


@pytest.mark.parametrize(
    ("name", "n_layers", "n_global", "n_kv", "head_dim", "window"),
    [
        ("gemma3-1b", 26, 4, 1, 256, 512),
        ("gemma3-4b", 34, 5, 4, 256, 1024),
        ("gemma3-12b", 48, 8, 8, 256, 1024),
        ("gemma3-27b", 62, 10, 16, 128, 1024),
    ],
)
def test_gemma3_at_32k_by_hand(name, n_layers, n_global, n_kv, head_dim, window):
    cfg = get_preset(name)
    assert kv_cache_bytes(cfg, CTX) == hand_computed(n_layers, n_global, n_kv, head_dim, window)
    assert kv_cache_bytes_all_global(cfg, CTX) == hand_computed(n_layers, n_layers, n_kv, head_dim, window)


def test_gemma3_1b_known_values():
    # 1B at 32k in bf16: 4 global layers x 32768 + 22 local x 512 tokens, 1 KV head of 256
    assert kv_cache_bytes(get_preset("gemma3-1b"), CTX) == 145_752_064
    assert kv_cache_bytes_all_global(get_preset("gemma3-1b"), CTX) == 872_415_232


def test_local_layers_stop_growing_past_the_window():
    cfg = get_preset("gemma3-1b")
    a, b = kv_cache_bytes_per_layer(cfg, 1000), kv_cache_bytes_per_layer(cfg, 2000)
    for layer_type, x, y in zip(cfg.layer_types, a, b, strict=True):
        assert (y == x) if layer_type == "local" else (y == 2 * x)


def test_batch_and_dtype_scale_linearly():
    cfg = get_preset("gemma3-4b")
    assert kv_cache_bytes(cfg, 4096, batch_size=3, dtype="float32") == 6 * kv_cache_bytes(cfg, 4096)


def test_bad_dtype():
    with pytest.raises(ValueError, match="dtype: got 'int3'"):
        kv_cache_bytes(get_preset("tiny"), 10, dtype="int3")


def test_cli_json(capsys):
    main(["gemma3-27b", "--context", "32768", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert out["bytes"] == hand_computed(62, 10, 16, 128, 1024)
    assert out["bytes_all_global"] == hand_computed(62, 62, 16, 128, 1024)
    # decoding one more token reads every token it attends: the 1024 window on a local layer, all 32,769 on a global
    assert out["bytes_read_per_token"] == 2 * 16 * 128 * 2 * (52 * 1024 + 10 * (CTX + 1))


def test_local_layers_read_no_more_than_the_window():
    cfg = get_preset("gemma3-1b")  # 22 local layers, window 512; 4 global; 1024 KV bytes per token and layer
    assert kv_bytes_read_per_token(cfg, 100) == 1024 * 26 * 101
    assert kv_bytes_read_per_token(cfg, 2000) - kv_bytes_read_per_token(cfg, 1000) == 1024 * 4 * 1000


def test_cli_table_has_the_read_column(capsys):
    main(["gemma3-1b", "--context", "32768"])
    out = capsys.readouterr().out
    assert "read per token" in out and "145,756,160" in out  # 1024 bytes x (22 x 512 + 4 x 32,769)


def test_cli_measure_matches_computed(capsys):
    main(["small", "--context", "2048", "--measure", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert out["bytes_measured"] == out["bytes"]
