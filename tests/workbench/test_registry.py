import pytest
import torch
from torch import nn

from workbench import build_model, get_preset
from workbench.registry import MLP, Registry


def test_unknown_name_lists_registered():
    reg = Registry("widget")
    reg.register("a")(int)
    with pytest.raises(ValueError, match="unknown widget 'b'; registered: a"):
        reg.build("b")


def test_duplicate_registration_is_an_error():
    reg = Registry("widget")
    reg.register("a")(int)
    with pytest.raises(ValueError, match="already registered"):
        reg.register("a")(float)


def test_new_variant_is_a_registered_class_plus_a_config_value():
    class ZeroMLP(nn.Module):
        def __init__(self, d_model, hidden, bias):
            super().__init__()
            self.scale = nn.Parameter(torch.zeros(1))

        def forward(self, x):
            return x * self.scale

    MLP.register("test-zero")(ZeroMLP)
    try:
        model = build_model(get_preset("tiny").replace(mlp="test-zero"))
        assert isinstance(model.blocks[0].mlp, ZeroMLP)
        assert model(torch.randint(0, 264, (1, 4))).shape == (1, 4, 264)
    finally:
        MLP._builders.pop("test-zero")
