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


def test_gemma4_e2b_at_32k_by_hand():
    # 25 local layers: 4 KV heads x 256, K and V in bf16 (4096 bytes per token) over the 512 window; 5 global
    # layers: 4 KV heads x 512 (8192 bytes per token) over all 32,768 tokens
    cfg = get_preset("gemma4-e2b")
    assert kv_cache_bytes(cfg, CTX) == 25 * 4096 * 512 + 5 * 8192 * CTX == 1_394_606_080
    # K = V on the global layers halves them; sharing the last 10 layers' KV (2 of them global) drops those too
    assert kv_cache_bytes(cfg.replace(k_eq_v_global=True), CTX) == 25 * 4096 * 512 + 5 * 4096 * CTX
    assert kv_cache_bytes(cfg.replace(kv_shared_layers=10), CTX) == 17 * 4096 * 512 + 3 * 8192 * CTX


def test_shared_layers_read_what_they_do_not_store():
    """A KV-shared layer attends over its source layer's keys and values: the decode step reads them again."""
    cfg = get_preset("gemma4-e2b")
    shared = cfg.replace(kv_shared_layers=10)
    assert kv_bytes_read_per_token(shared, CTX) == kv_bytes_read_per_token(cfg, CTX)
    assert kv_cache_bytes(shared, CTX) < kv_cache_bytes(cfg, CTX)


def test_cli_gemma3_and_gemma4_side_by_side(capsys):
    main(["gemma3-4b", "gemma4-tiny", "--context", "1000", "4000", "--measure", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert [r["context"] for r in out["gemma4-tiny"]] == [1000, 4000]
    assert all(r["bytes_measured"] == r["bytes"] for rows in out.values() for r in rows)
    assert out["gemma4-tiny"][0]["layout"] == "5 L 2x32 + 1 G 2x64"
    main(["gemma3-1b", "gemma4-tiny", "--context", "1000", "4000"])
    table = capsys.readouterr().out
    assert "22 L 1x256 + 4 G 1x256" in table and table.count("gemma4-tiny") == 2
