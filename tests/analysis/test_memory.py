import json

import pytest
import torch

from analysis.kv_cache import kv_cache_bytes, kv_cache_bytes_all_global
from analysis.memory import PARTS, main, memory_table, weight_bytes
from analysis.params import count_params
from workbench import build_model, get_preset
from workbench.quant.formats import FORMATS

# tiny: vocab 264, d 128, 6 layers, 4 heads x 32, 2 KV heads, GeGLU 384, sandwich norms, QK-norm, tied.
# matrices: embed 264x128; per layer q 128x128, k 64x128, v 64x128, o 128x128, gate/up 384x128, down 128x384
TINY_ELEMENTS = 264 * 128 + 6 * (2 * 128 * 128 + 2 * 64 * 128 + 3 * 384 * 128)  # 1,213,440
TINY_ROWS = 264 + 6 * (128 + 64 + 64 + 128 + 384 + 384 + 128)  # 7,944 output channels
TINY_VECTOR_BYTES = 2 * (6 * (4 * 128 + 2 * 32) + 128)  # 4 norms + q/k norms per layer, final norm; bf16
TINY = {
    "bf16": 2 * TINY_ELEMENTS + TINY_VECTOR_BYTES,
    "int4": TINY_ELEMENTS // 2 + 2 * TINY_ROWS + TINY_VECTOR_BYTES,
    "int4_block32": TINY_ELEMENTS // 2 + 2 * (TINY_ELEMENTS // 32) + TINY_VECTOR_BYTES,
    "fp8": TINY_ELEMENTS + 2 * TINY_ROWS + TINY_VECTOR_BYTES,
}


@pytest.mark.parametrize("fmt", FORMATS)
def test_tiny_by_hand(fmt):
    assert weight_bytes(get_preset("tiny"), fmt) == TINY[fmt]


def test_tiny_known_values():
    assert TINY == {"bf16": 2_434_048, "int4": 629_776, "int4_block32": 689_728, "fp8": 1_236_496}


def test_gemma3_1b_int4_by_hand():
    d, layers, q, kv, ff, vocab = 1152, 26, 4 * 256, 256, 6912, 262_144
    elements = vocab * d + layers * (2 * q * d + 2 * kv * d + 3 * ff * d)
    rows = vocab + layers * (q + 2 * kv + 2 * ff + 2 * d)
    vectors = layers * (4 * d + 2 * 256) + d
    assert weight_bytes(get_preset("gemma3-1b"), "int4") == elements // 2 + 2 * rows + 2 * vectors


@pytest.mark.parametrize("name", ["tiny", "llama-small", "gemma3-1b", "gemma2-2b"])
def test_bf16_is_two_bytes_per_parameter(name):
    cfg = get_preset(name)
    assert weight_bytes(cfg, "bf16") == 2 * count_params(cfg)["total"]


def test_bf16_matches_a_real_model():
    model = build_model(get_preset("tiny")).to(torch.bfloat16)
    assert weight_bytes(get_preset("tiny"), FORMATS["bf16"]) == sum(p.nbytes for p in model.parameters())


def test_memory_table_parts():
    cfg = get_preset("tiny")
    rows = memory_table({"tiny": cfg}, context=1000)
    assert [r["part"] for r in rows] == list(PARTS)
    kv = [0, kv_cache_bytes(cfg, 1000), kv_cache_bytes_all_global(cfg, 1000)]
    for row, extra in zip(rows, kv, strict=True):
        assert row["kv_bytes"] == extra
        assert {f: row[f] for f in FORMATS} == {f: TINY[f] + extra for f in FORMATS}


def test_kv_dtype():
    rows = memory_table({"tiny": get_preset("tiny")}, context=1000, kv_dtype="float8")
    assert rows[1]["kv_bytes"] == kv_cache_bytes(get_preset("tiny"), 1000) // 2


def test_bad_format():
    with pytest.raises(ValueError, match="quant format: got 'int3'"):
        weight_bytes(get_preset("tiny"), "int3")


def test_cli(capsys):
    main(["tiny", "--context", "1000", "--json"])
    rows = json.loads(capsys.readouterr().out)
    assert rows == memory_table({"tiny": get_preset("tiny")}, context=1000)
    main(["tiny"])
    out = capsys.readouterr().out
    assert "Int4 (blocks=32)" in out and "+KV all-global" in out
