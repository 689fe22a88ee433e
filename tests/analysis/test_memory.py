import json

import pytest
import torch

from analysis.memory import main, memory_table, weight_bytes
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
# KV at 1000 tokens, bf16: 2 KV heads x 32 x (K, V) x 2 bytes = 256 bytes per token and layer; 5 local layers hold
# the 64-token window, the global one all 1000; all-global: 6 x 1000
TINY_KV = {"+KV": 256 * (5 * 64 + 1000), "+KV all-global": 256 * 6 * 1000}


@pytest.mark.parametrize("fmt", FORMATS)
def test_tiny_by_hand(fmt):
    assert weight_bytes(get_preset("tiny"), fmt) == TINY[fmt]


def test_gemma3_1b_int4_by_hand():
    d, layers, q, kv, ff, vocab = 1152, 26, 4 * 256, 256, 6912, 262_144
    elements = vocab * d + layers * (2 * q * d + 2 * kv * d + 3 * ff * d)
    rows = vocab + layers * (q + 2 * kv + 2 * ff + 2 * d)
    vectors = layers * (4 * d + 2 * 256) + d
    assert weight_bytes(get_preset("gemma3-1b"), "int4") == elements // 2 + 2 * rows + 2 * vectors


def test_bf16_is_two_bytes_per_parameter():
    # Gemma 2 report, Table 2: 590,118,912 embedding and 2,024,517,888 non-embedding parameters
    assert weight_bytes(get_preset("gemma2-2b"), "bf16") == 2 * (590_118_912 + 2_024_517_888)
    model = build_model(get_preset("llama-small"))  # untied: the head is a matrix of its own
    assert weight_bytes(get_preset("llama-small"), "bf16") == 2 * sum(p.numel() for p in model.parameters())


def test_bf16_matches_a_real_model():
    model = build_model(get_preset("tiny")).to(torch.bfloat16)
    assert weight_bytes(get_preset("tiny"), FORMATS["bf16"]) == sum(p.nbytes for p in model.parameters())


def expected_rows(kv: dict[str, int]) -> list[dict[str, object]]:
    """tiny's Table 3 rows by hand: the weights alone, then with each KV cache."""
    rows = []
    for part in ("weights", "+KV", "+KV all-global"):
        extra = kv.get(part, 0)
        rows.append({"preset": "tiny", "part": part, "kv_bytes": extra, **{f: TINY[f] + extra for f in FORMATS}})
    return rows


def test_memory_table_parts():
    assert memory_table({"tiny": get_preset("tiny")}, context=1000) == expected_rows(TINY_KV)


def test_kv_dtype():
    rows = memory_table({"tiny": get_preset("tiny")}, context=1000, kv_dtype="float8")
    assert rows[1]["kv_bytes"] == TINY_KV["+KV"] // 2


def test_bad_format():
    with pytest.raises(ValueError, match="quant format: got 'int3'"):
        weight_bytes(get_preset("tiny"), "int3")


def test_cli(capsys):
    main(["tiny", "--context", "1000", "--json"])
    assert json.loads(capsys.readouterr().out) == expected_rows(TINY_KV)
    main(["tiny"])
    out = capsys.readouterr().out
    assert "Int4 (blocks=32)" in out and "+KV all-global" in out


def test_cli_contexts_side_by_side_with_measured_kv(capsys):
    """Gemma 3 and Gemma 4 shapes at two contexts; each +KV cache allocated and equal to the computed bytes."""
    main(["tiny", "gemma4-tiny", "--context", "1000", "4000", "--measure", "--json"])
    tables = json.loads(capsys.readouterr().out)
    assert sorted(tables) == ["1000", "4000"]
    kv_rows = [r for rows in tables.values() for r in rows if r["part"] == "+KV"]
    assert len(kv_rows) == 4 and all(r["kv_measured_equal"] for r in kv_rows)
    assert tables["1000"][1]["kv_bytes"] == TINY_KV["+KV"]  # tiny's, as by hand above
    # gemma4-tiny: 5 local layers of 2 KV heads x 32 (the 64-token window), 1 global of 2 x 64 (all 4000 tokens)
    g4 = next(r for r in tables["4000"] if r["preset"] == "gemma4-tiny" and r["part"] == "+KV")
    assert g4["kv_bytes"] == 256 * 5 * 64 + 512 * 4000
    main(["tiny", "gemma4-tiny", "--context", "1000", "4000", "--measure"])
    out = capsys.readouterr().out
    rows = [line.split() for line in out.splitlines()[3:]]
    assert [r[2] for r in rows].count("weights") == 2 and out.count("True") == 4  # the weights once per preset
