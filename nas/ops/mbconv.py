"""Mobile inverted-bottleneck building blocks (MobileNetV2 / EfficientNet, timm conventions).

- :class:`MBConv`: 1x1 expansion -> BN -> act -> depthwise k x k (stride) -> BN -> act -> SE -> 1x1 projection -> BN.
  No residual inside: the owner adds a shortcut (see :class:`ResidualShortcut`), so a weight-sharing supernet can
  share one shortcut between the candidate ops of a layer.
- :class:`DepthwiseSeparable` (EfficientNet's "MB1" first block): depthwise k x k -> BN -> act -> SE -> 1x1 -> BN,
  with an identity residual when the stride is 1 and the width is kept.
- :class:`ResidualShortcut`: identity, or [2x2 average pool (stride 2, ceil mode) when the stride is 2] +
  [1x1 conv + BN when the width changes] (the "avg-down" residual of BossNAS's MBConv space).

Padding is ``k // 2`` (PyTorch style, timm's default ``pad_type=''``). Imports only ``torch`` and ``nas.ops.se``.
"""

from torch import Tensor, nn

from nas.ops.se import SqueezeExcitation, activation_layer, efficientnet_se_hidden


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round ``value`` to a multiple of ``divisor`` (at least ``min_value``), never more than 10% below it (timm)."""
    min_value = min_value or divisor
    new = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if new < 0.9 * value:
        new += divisor
    return new


class MBConv(nn.Module):
    """Inverted bottleneck body ``c_in -> c_in * expansion -> c_out`` (see the module docstring); no residual."""

    def __init__(
        self,
        c_in: int,
        c_out: int,
        kernel_size: int,
        stride: int = 1,
        expansion: float = 6.0,
        se_ratio: float = 0.25,
        activation: str = "silu",
    ) -> None:
        super().__init__()
        mid = make_divisible(c_in * expansion)
        self.conv_pw = nn.Conv2d(c_in, mid, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(mid)
        self.act1 = activation_layer(activation)
        self.conv_dw = nn.Conv2d(mid, mid, kernel_size, stride, kernel_size // 2, groups=mid, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.act2 = activation_layer(activation)
        self.se = SqueezeExcitation(mid, efficientnet_se_hidden(c_in, se_ratio), activation) if se_ratio > 0 else None
        self.conv_pwl = nn.Conv2d(mid, c_out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(c_out)

    def forward(self, x: Tensor) -> Tensor:
        x = self.act1(self.bn1(self.conv_pw(x)))
        x = self.act2(self.bn2(self.conv_dw(x)))
        if self.se is not None:
            x = self.se(x)
        return self.bn3(self.conv_pwl(x))


class DepthwiseSeparable(nn.Module):
    """Depthwise k x k (stride) -> BN -> act -> SE -> pointwise 1x1 -> BN [+ x when stride 1 and c_in == c_out]."""

    def __init__(
        self,
        c_in: int,
        c_out: int,
        kernel_size: int = 3,
        stride: int = 1,
        se_ratio: float = 0.25,
        activation: str = "silu",
    ) -> None:
        super().__init__()
        self.has_residual = stride == 1 and c_in == c_out
        self.conv_dw = nn.Conv2d(c_in, c_in, kernel_size, stride, kernel_size // 2, groups=c_in, bias=False)
        self.bn1 = nn.BatchNorm2d(c_in)
        self.act1 = activation_layer(activation)
        self.se = SqueezeExcitation(c_in, efficientnet_se_hidden(c_in, se_ratio), activation) if se_ratio > 0 else None
        self.conv_pw = nn.Conv2d(c_in, c_out, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)

    def forward(self, x: Tensor) -> Tensor:
        y = self.act1(self.bn1(self.conv_dw(x)))
        if self.se is not None:
            y = self.se(y)
        y = self.bn2(self.conv_pw(y))
        return y + x if self.has_residual else y


class ResidualShortcut(nn.Sequential):
    """Identity, or [avg pool 2x2 stride 2 (ceil mode, padding excluded)] + [1x1 conv + BN] as needed."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1) -> None:
        layers: list[nn.Module] = []
        if stride == 2:
            layers.append(nn.AvgPool2d(2, 2, ceil_mode=True, count_include_pad=False))
        elif stride != 1:
            raise ValueError(f"stride must be 1 or 2, got {stride}")
        if c_in != c_out:
            layers += [nn.Conv2d(c_in, c_out, 1, bias=False), nn.BatchNorm2d(c_out)]
        super().__init__(*layers)  # empty: identity
