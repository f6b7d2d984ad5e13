"""Squeeze-and-excitation with an explicit hidden width and activation (timm/EfficientNet conventions).

:class:`nas.ops.attention.SqueezeExcite` derives its hidden width from the gated channels with a ceiling; the
networks of BossNAS need the two conventions of timm instead: ResNet's ``SEModule`` (hidden = max(8, C // 16),
ReLU) and EfficientNet's ``SqueezeExcite`` (hidden = round(block input channels * 0.25), the block's activation).
This module imports only ``torch`` so spaces can list it in ``standalone_modules()``.
"""

from torch import Tensor, nn

ACTIVATIONS = ("relu", "silu", "sigmoid", "hswish", "hsigmoid")


def activation_layer(name: str) -> nn.Module:
    """A fresh activation module by name: 'relu', 'silu' (swish), 'sigmoid', 'hswish' (hard swish, MobileNetV3 /
    FBNetV3) or 'hsigmoid' (hard sigmoid, ``relu6(x + 3) / 6``)."""
    if name == "relu":
        return nn.ReLU()
    if name == "silu":
        return nn.SiLU()
    if name == "sigmoid":
        return nn.Sigmoid()
    if name == "hswish":
        return nn.Hardswish()
    if name == "hsigmoid":
        return nn.Hardsigmoid()
    raise ValueError(f"unknown activation {name!r}; allowed: {', '.join(ACTIVATIONS)}")


def resnet_se_hidden(channels: int, reduction: int = 16, min_channels: int = 8) -> int:
    """Hidden width of timm's ResNet ``SEModule``: ``max(channels // reduction, min_channels)``."""
    return max(channels // reduction, min_channels)


def efficientnet_se_hidden(base_channels: int, ratio: float = 0.25) -> int:
    """Hidden width of timm's EfficientNet ``SqueezeExcite``: ``round(base_channels * ratio)``, at least 1.

    ``base_channels`` is the input width of the block (not the expanded width the gate is applied to).
    """
    return max(1, int(base_channels * ratio + 0.5))


class SqueezeExcitation(nn.Module):
    """Channel gates: global average pool -> 1x1 conv (bias) to ``hidden`` -> activation -> 1x1 conv (bias) ->
    gate -> multiply. The gate is the sigmoid (timm) or the hard sigmoid (``gate="hsigmoid"``: MobileNetV3,
    FBNetV3's ``sehsig``)."""

    def __init__(self, channels: int, hidden: int, activation: str = "relu", gate: str = "sigmoid") -> None:
        super().__init__()
        if hidden < 1:
            raise ValueError(f"hidden must be >= 1, got {hidden}")
        if gate not in ("sigmoid", "hsigmoid"):
            raise ValueError(f"unknown gate {gate!r}; allowed: sigmoid, hsigmoid")
        self.reduce = nn.Conv2d(channels, hidden, 1, bias=True)
        self.act = activation_layer(activation)
        self.expand = nn.Conv2d(hidden, channels, 1, bias=True)
        self.hard = gate == "hsigmoid"

    def forward(self, x: Tensor) -> Tensor:
        s = self.expand(self.act(self.reduce(x.mean((2, 3), keepdim=True))))
        return x * (nn.functional.hardsigmoid(s) if self.hard else s.sigmoid())
