"""Quantisation: storage formats (bytes per weight, scales included) and quantisation-aware training."""
