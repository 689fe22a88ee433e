"""Byte-level tokens: ids 0-255 are the UTF-8 bytes, 256+ are specials; the `tiny`/`small` presets use 264 ids."""

from __future__ import annotations

import numpy as np

EOS = 256  # document separator
SPECIALS = {"eos": EOS, "pad": 257, "query": 258, "key": 259, "sep": 260}
VOCAB_SIZE = 264
NAME = "bytes-v1"  # part of the cache key: change it if the encoding changes


def encode(data: bytes) -> np.ndarray:
    """One document: its bytes followed by EOS."""
    return np.append(np.frombuffer(data, dtype=np.uint8).astype(np.uint16), np.uint16(EOS))


def token_bytes() -> np.ndarray:
    """UTF-8 bytes each id stands for (specials: 0), so loss can be converted to bits per byte."""
    out = np.zeros(VOCAB_SIZE, dtype=np.int64)
    out[:256] = 1
    return out
