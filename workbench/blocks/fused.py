"""Fused projections: one Linear where the model once had several, and loading state dicts saved before the fusion.

Attention projects q, k and v with one `qkv_proj` and gated MLPs compute gate and up with one `gate_up_proj`
(rows: the parts in order), so a train step runs one larger matmul where it ran two or three.
"""

from __future__ import annotations

from collections.abc import MutableMapping

import torch


def fuse_split_linears(
    state_dict: MutableMapping[str, torch.Tensor], prefix: str, fused: str, parts: tuple[str, ...]
) -> None:
    """In place: `parts`' weights (and biases) under `prefix` concatenated along the output dim into `fused`.

    Called from the modules' `_load_from_state_dict`, so checkpoints with the separate names still load, strictly;
    a state dict that already has the fused name is left as it is.
    """
    for suffix in ("weight", "bias"):
        keys = [f"{prefix}{part}.{suffix}" for part in parts]
        if all(key in state_dict for key in keys):
            state_dict[f"{prefix}{fused}.{suffix}"] = torch.cat([state_dict.pop(key) for key in keys])
