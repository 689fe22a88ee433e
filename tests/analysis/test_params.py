import json

import pytest

from analysis.params import count_params, main
from workbench import get_preset

# Gemma 3 report, Table 1 (millions) and Gemma 2 report, Table 2 (exact).
GEMMA3_NON_EMBEDDING_M = {"gemma3-1b": 698, "gemma3-4b": 3209, "gemma3-12b": 10759, "gemma3-27b": 25600}
GEMMA2_TABLE2 = {
    "gemma2-2b": (590_118_912, 2_024_517_888),
    "gemma2-9b": (917_962_752, 8_324_201_984),
    "gemma2-27b": (1_180_237_824, 26_047_480_320),
}


@pytest.mark.parametrize(("name", "millions"), GEMMA3_NON_EMBEDDING_M.items())
def test_gemma3_table1_non_embedding(name, millions):
    assert round(count_params(get_preset(name))["non_embedding"] / 1e6) == millions


def test_gemma3_1b_embedding():
    assert round(count_params(get_preset("gemma3-1b"))["embedding"] / 1e6) == 302


@pytest.mark.parametrize(("name", "expected"), GEMMA2_TABLE2.items())
def test_gemma2_table2_exact(name, expected):
    counts = count_params(get_preset(name))
    assert (counts["embedding"], counts["non_embedding"]) == expected


def test_untied_head_counts_as_embedding():
    tied = count_params(get_preset("tiny"))
    untied = count_params(get_preset("tiny").replace(tie_embeddings=False))
    assert untied["embedding"] == 2 * tied["embedding"]
    assert untied["non_embedding"] == tied["non_embedding"]


def test_cli_json(capsys):
    main(["gemma2-2b", "--json"])
    embedding, non_embedding = GEMMA2_TABLE2["gemma2-2b"]
    assert json.loads(capsys.readouterr().out) == {
        "embedding": embedding,
        "non_embedding": non_embedding,
        "total": embedding + non_embedding,
    }


def test_cli_table_all(capsys):
    main(["--all"])
    out = capsys.readouterr().out
    assert "gemma3-27b" in out and "25,599,716,096" in out and "2,024,517,888" in out


def test_cli_unknown_preset_exits_with_message(capsys):
    with pytest.raises(SystemExit) as err:
        main(["gemma9"])
    assert err.value.code == 2
    assert "preset: got 'gemma9'" in capsys.readouterr().err
