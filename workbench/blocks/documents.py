"""Document masking for packed sequences: which document each token belongs to, and its RoPE position in it.

A packed training window holds the end of one document, a separator, the next document, ... . With a document
mask a token attends only to earlier tokens of its own document (OLMo-core, the GPT-2 speedrun, SmolLM3), and
with `restart` positions RoPE counts from 0 at each document's first token, so a document packed after others
is computed exactly as it would be alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

DOCUMENT_POSITIONS = ("restart", "continue")


@dataclass(frozen=True)
class Documents:
    """`ids` (B, T): the document of each token, non-decreasing along a row; `positions` (B, T): RoPE positions
    restarting at 0 in each document, or None to keep the window's own positions 0..T-1. `masks`: what a kernel
    derives from them once per forward pass (flex's block mask per window), shared by the layers that need it."""

    ids: torch.Tensor
    positions: torch.Tensor | None
    masks: dict[Any, Any] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_separators(cls, input_ids: torch.Tensor, separator: int, positions: str = "restart") -> Documents:
        """Documents of a (B, T) window whose documents each end with the token `separator` (the data sources'
        EOS): the separator belongs to the document it ends, and the token after it starts the next one."""
        if positions not in DOCUMENT_POSITIONS:
            raise ValueError(f"data.document_positions: got {positions!r}; allowed: {', '.join(DOCUMENT_POSITIONS)}")
        ends = (input_ids == separator).long()
        ids = ends.cumsum(dim=1) - ends
        if positions == "continue":
            return cls(ids, None)
        index = torch.arange(input_ids.shape[1], device=input_ids.device).expand_as(input_ids)
        starts = torch.ones_like(ends, dtype=torch.bool)
        starts[:, 1:] = ends[:, :-1].bool()
        first = torch.where(starts, index, torch.zeros_like(index)).cummax(dim=1).values
        return cls(ids, index - first)

    def rope_positions(self, positions: torch.Tensor) -> torch.Tensor:
        """Positions for RoPE: the per-document ones, or the window's own `positions` (T,) when they continue."""
        return positions if self.positions is None else self.positions


@dataclass(frozen=True)
class DocumentMasking:
    """A run's document masking (`data.document_mask`): the token that ends each document in its packed windows (the
    data bundle's `document_separator`) and `data.document_positions`; called on a batch's inputs."""

    separator: int
    positions: str = "restart"

    def __call__(self, input_ids: torch.Tensor) -> Documents:
        return Documents.from_separators(input_ids, self.separator, self.positions)
