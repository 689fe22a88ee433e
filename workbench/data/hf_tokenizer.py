"""The `transformers` tokenizer of a run's data source, so that an exported model reads text as it was trained on.

Byte sources (stdlib, text, passkey): ids 0-255 are the UTF-8 bytes (`tokenizers`' BPE with no merges and byte
fallback: every character falls back to its bytes, `<0x41>` -> 65), 256+ the specials of `byte_tokenizer`.
The `hf` source: the run's own tokenizer file or folder. `encode` starts the text as every training document
started: with the specials the tokenizer adds itself (a BOS), or, where it adds none, with the document separator
(the EOS the training stream has between documents).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tokenizers import Tokenizer, decoders, models, processors
from transformers import PreTrainedTokenizerFast

from workbench.data import byte_tokenizer

TEXT_SOURCES = ("stdlib", "text", "passkey", "hf")  # sources whose tokens are text


def special_name(name: str) -> str:
    return f"<|{name}|>"


def byte_level() -> PreTrainedTokenizerFast:
    """The byte tokenizer: `encode(text)` == [EOS, *text.encode()] (`add_special_tokens=False`: no EOS)."""
    backend = Tokenizer(models.BPE(vocab={f"<0x{b:02X}>": b for b in range(256)}, merges=[], byte_fallback=True))
    backend.decoder = decoders.Sequence([decoders.ByteFallback(), decoders.Fuse()])
    names = {i: special_name(n) for n, i in byte_tokenizer.SPECIALS.items()}
    backend.add_special_tokens(
        [names.get(i, special_name(f"unused{i}")) for i in range(256, byte_tokenizer.VOCAB_SIZE)]
    )
    eos = names[byte_tokenizer.EOS]
    # training encodes a text's bytes, never a special: "<|eos|>" written in a text stays its 7 bytes
    return _wrap(backend, eos, pad_token=names[byte_tokenizer.SPECIALS["pad"]], split_special_tokens=True)


def for_data(data: Mapping[str, Any]) -> PreTrainedTokenizerFast:
    """The tokenizer of a run's `data` config node; a ValueError naming `data.source` when its tokens are not text."""
    source = data["source"]
    if source not in TEXT_SOURCES:
        raise ValueError(
            f"data.source: got {source!r}, whose tokens are not text, so no tokenizer can score text with the model; "
            f"allowed: {', '.join(TEXT_SOURCES)}"
        )
    if source != "hf":
        return byte_level()
    from workbench.data.hf import LocalTokenizer

    eos = data.get("eos_token")
    return _wrap(LocalTokenizer(data["tokenizer"], eos).backend, eos)


def _wrap(backend: Tokenizer, eos: str | None, **kwargs: Any) -> PreTrainedTokenizerFast:
    """`backend`, starting a text with the document separator unless its own post-processing adds specials."""
    own = backend.post_processor
    if eos is not None and (own is None or own.num_special_tokens_to_add(False) == 0):
        backend.post_processor = processors.TemplateProcessing(
            single=f"{eos} $A", pair=f"{eos} $A {eos} $B", special_tokens=[(eos, backend.token_to_id(eos))]
        )
    return PreTrainedTokenizerFast(tokenizer_object=backend, eos_token=eos, **kwargs)
