"""KV cache for decoding: global layers cache every token, local layers a ring buffer of `window` slots.

A layer whose keys are its values (K = V) caches one tensor; a layer that reuses an earlier layer's keys and
values (cross-layer KV sharing) caches nothing.
"""

from __future__ import annotations

import torch


class LayerCache:
    """Keys and values of one layer, preallocated once; `capacity` slots, written at position % capacity.

    A global layer has capacity = max_len and never wraps (`KVCache.check` refuses longer requests); a local
    layer has capacity = min(window, max_len) and overwrites the oldest slot, which by then has left the window.
    Shapes are (batch, heads, capacity, dim); k and v may differ in heads and dim (latent attention caches its
    latent and its RoPE key here). `v_shape` None: one tensor serves as both (the layer derives K and V from it).
    """

    def __init__(
        self,
        k_shape: tuple[int, int, int, int],
        v_shape: tuple[int, int, int, int] | None,
        dtype: torch.dtype,
        device: torch.device,
    ) -> None:
        self.k = torch.zeros(k_shape, dtype=dtype, device=device)
        self.v = None if v_shape is None else torch.zeros(v_shape, dtype=dtype, device=device)
        self.capacity = k_shape[2]
        self.length = 0  # tokens written so far

    @property
    def nbytes(self) -> int:
        return self.k.nbytes + (0 if self.v is None else self.v.nbytes)

    def update(
        self, k: torch.Tensor, v: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """Store the new keys/values; return every key/value the new queries may see, with their positions."""
        start, n_new = self.length, k.shape[2]
        kept = min(start, self.capacity)
        old_pos = torch.arange(start - kept, start, device=k.device)
        slots = old_pos % self.capacity
        new_pos = torch.arange(start, start + n_new, device=k.device)
        written = new_pos[-self.capacity :] % self.capacity
        keys = torch.cat((self.k[:, :, slots], k), dim=2)
        self.k[:, :, written] = k[:, :, -self.capacity :]
        values = None
        if self.v is not None:
            values = torch.cat((self.v[:, :, slots], v), dim=2)
            self.v[:, :, written] = v[:, :, -self.capacity :]
        self.length = start + n_new
        return keys, values, torch.cat((old_pos, new_pos))


class SharedLayerCache:
    """The cache of a layer that reuses an earlier layer's keys and values: it allocates nothing.

    The layer reads them from the forward pass (`workbench.blocks.attention.SharedKV`), which holds what the
    earlier layer's own cache returned.
    """

    nbytes = 0


class KVCache:
    """The caches of every layer of a model, made by `Transformer.new_cache`; `nbytes` is what they allocate.

    It holds up to `max_len` tokens in all: a longer request raises, on local layers too (a local cache shorter
    than its window cannot drop anything), and so does a local layer whose window outgrew its cache.
    """

    def __init__(self, layers: list[LayerCache | SharedLayerCache], max_len: int) -> None:
        self.layers = layers
        self.max_len = max_len

    def check(self, n_new: int, windows: list[int | None]) -> None:
        """Raise unless `n_new` more tokens fit, for layers now attending over `windows` keys (None: global)."""
        if self.length + n_new > self.max_len:
            raise ValueError(
                f"KV cache overflow: {self.length} cached + {n_new} new tokens exceed the cache length "
                f"{self.max_len}; allocate the cache with a larger max_len"
            )
        for i, (layer, window) in enumerate(zip(self.layers, windows, strict=True)):
            if isinstance(layer, LayerCache) and window is not None and layer.capacity < min(window, self.max_len):
                raise ValueError(
                    f"window: layer {i} attends over {window} keys but its cache holds {layer.capacity}; "
                    "allocate the cache after set_window"
                )

    @property
    def length(self) -> int:
        """Tokens cached so far; the first layer always has a cache of its own (it has no earlier one to reuse)."""
        return self.layers[0].length

    @property
    def nbytes(self) -> int:
        return sum(layer.nbytes for layer in self.layers)
