"""The `transformers` tokenizer of a run's data: byte ids as `byte_tokenizer` makes them; an `hf` run's own."""

import numpy as np
import pytest
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import AutoTokenizer

from workbench.data import byte_tokenizer
from workbench.data.hf import LocalTokenizer
from workbench.data.hf_tokenizer import byte_level, for_data

TEXTS = ["def f(x):\n    return x  # ok", "héllo wörld — 日本語 😀", " <|eos|> is text here", "\x00\x7f\t", ""]


@pytest.mark.parametrize("text", TEXTS)
def test_byte_ids_are_the_training_ids(text):
    """The training stream is documents each followed by EOS: a text starts after one, as the tokenizer puts it."""
    tok, doc = byte_level(), byte_tokenizer.encode(text.encode()).tolist()
    assert tok.encode(text) == [byte_tokenizer.EOS, *doc[:-1]]
    assert tok.encode(text, add_special_tokens=False) == doc[:-1]
    assert tok.decode(tok.encode(text), skip_special_tokens=True) == text


def test_byte_specials_and_reload(tmp_path):
    tok = byte_level()
    assert len(tok) == byte_tokenizer.VOCAB_SIZE
    assert {n: tok.convert_tokens_to_ids(f"<|{n}|>") for n in byte_tokenizer.SPECIALS} == byte_tokenizer.SPECIALS
    assert (tok.eos_token_id, tok.pad_token_id) == (byte_tokenizer.EOS, byte_tokenizer.SPECIALS["pad"])
    tok.save_pretrained(tmp_path)
    again = AutoTokenizer.from_pretrained(tmp_path, local_files_only=True)
    assert [again.encode(t) for t in TEXTS] == [tok.encode(t) for t in TEXTS]
    assert (again.eos_token_id, again.pad_token_id) == (tok.eos_token_id, tok.pad_token_id)


@pytest.mark.parametrize("source", ["stdlib", "text", "passkey"])
def test_byte_sources_share_the_byte_tokenizer(source):
    assert for_data({"source": source}).encode("ab") == [byte_tokenizer.EOS, 97, 98]


def _word_tokenizer(path, bos):
    backend = Tokenizer(models.WordLevel({"[UNK]": 0, "<s>": 1, "</s>": 2, "a": 3, "b": 4}, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    if bos:
        backend.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    backend.save(str(path))
    return str(path)


@pytest.mark.parametrize("bos", [True, False])
def test_hf_source_starts_a_text_as_training_started_a_document(tmp_path, bos):
    """A tokenizer that adds a BOS keeps it; one that adds nothing gets the separator (eos_token) in front."""
    path = _word_tokenizer(tmp_path / "tokenizer.json", bos)
    tok = for_data({"source": "hf", "tokenizer": path, "eos_token": "</s>"})
    (doc,) = LocalTokenizer(path, "</s>").encode(["a b a"])  # the training encoding: [BOS], ids, EOS
    assert tok.encode("a b a") == ([] if bos else [2]) + doc[:-1].tolist()
    assert np.array_equal(doc[-1:], [2]) and tok.eos_token_id == 2
    without_eos = for_data({"source": "hf", "tokenizer": path, "eos_token": None})
    assert without_eos.encode("a b") == ([1] if bos else []) + [3, 4] and without_eos.eos_token_id is None


def test_a_source_without_text_names_data_source():
    with pytest.raises(ValueError, match=r"data\.source: got 'mqar'.*allowed: stdlib, text, passkey, hf"):
        for_data({"source": "mqar"})
