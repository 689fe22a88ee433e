"""Weight storage formats and their exact byte cost, scales included.

The memory tables in `analysis` and the quantisation code read these definitions; there is one of each.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class QuantFormat:
    """`bits` per weight plus one `scale_bytes` scale per block of `block_size` weights along a row.

    block_size None means one scale per output channel (row); scale_bytes 0 means no scales (raw bf16).
    `element` is how one stored value is read: "int" (symmetric signed integer), "e4m3" (fp8) or "bf16".
    """

    name: str
    bits: int
    block_size: int | None
    scale_bytes: int
    element: str = "int"

    def matrix_bytes(self, rows: int, cols: int) -> int:
        """Bytes to store a (rows, cols) weight matrix in this format."""
        data = math.ceil(rows * cols * self.bits / 8)
        scales_per_row = 1 if self.block_size is None else math.ceil(cols / self.block_size)
        return data + rows * scales_per_row * self.scale_bytes if self.scale_bytes else data


FORMATS: dict[str, QuantFormat] = {
    "bf16": QuantFormat("bf16", bits=16, block_size=None, scale_bytes=0, element="bf16"),
    "int4": QuantFormat("int4", bits=4, block_size=None, scale_bytes=2),  # per-channel, bf16 scales
    "int4_block32": QuantFormat("int4_block32", bits=4, block_size=32, scale_bytes=2),
    "fp8": QuantFormat("fp8", bits=8, block_size=None, scale_bytes=2, element="e4m3"),  # e4m3 with a per-channel scale
}


def get_format(name: str) -> QuantFormat:
    if name not in FORMATS:
        raise ValueError(f"quant format: got {name!r}; allowed: {', '.join(FORMATS)}")
    return FORMATS[name]
