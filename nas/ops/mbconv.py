"""Mobile inverted-bottleneck building blocks (MobileNetV2 / EfficientNet, timm conventions).

- :class:`MBConv`: 1x1 expansion -> BN -> act -> depthwise k x k (stride) -> BN -> act -> SE -> 1x1 projection -> BN.
  No residual inside: the owner adds a shortcut (see :class:`ResidualShortcut`), so a weight-sharing supernet can
  share one shortcut between the candidate ops of a layer.
- :class:`DepthwiseSeparable` (EfficientNet's "MB1" first block): depthwise k x k -> BN -> act -> SE -> 1x1 -> BN,
  with an identity residual when the stride is 1 and the width is kept.
- :class:`ResidualShortcut`: identity, or [2x2 average pool (stride 2, ceil mode) when the stride is 2] +
  [1x1 conv + BN when the width changes] (the "avg-down" residual of BossNAS's MBConv space).

- :class:`IRF`: FBNetV3's inverted-residual block (an :class:`MBConv` body with hard swish, a hard-sigmoid SE, no
  expansion at ratio 1, the residual inside and a zero-initialised last BN gamma).

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
    """Inverted bottleneck body ``c_in -> c_in * expansion -> c_out`` (see the module docstring); no residual.

    The defaults are EfficientNet's (timm). FBNetV3's IRF body (see :class:`IRF`) changes four of them: no 1x1
    expansion at all when ``expansion`` is 1 (``skip_unit_expansion``), an explicit SE width (``se_hidden``), the SE's
    own activation (``se_activation``) and a hard-sigmoid gate (``gate``).
    """

    def __init__(
        self,
        c_in: int,
        c_out: int,
        kernel_size: int,
        stride: int = 1,
        expansion: float = 6.0,
        se_ratio: float = 0.25,
        activation: str = "silu",
        *,
        se_hidden: int | None = None,
        se_activation: str | None = None,
        gate: str = "sigmoid",
        skip_unit_expansion: bool = False,
        padding: int | None = None,
    ) -> None:
        super().__init__()
        expand = not (skip_unit_expansion and expansion == 1)
        mid = make_divisible(c_in * expansion) if expand else c_in
        self.conv_pw: nn.Conv2d | None = nn.Conv2d(c_in, mid, 1, bias=False) if expand else None
        self.bn1: nn.BatchNorm2d | None = nn.BatchNorm2d(mid) if expand else None
        self.act1: nn.Module | None = activation_layer(activation) if expand else None
        pad = kernel_size // 2 if padding is None else padding
        self.conv_dw = nn.Conv2d(mid, mid, kernel_size, stride, pad, groups=mid, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.act2 = activation_layer(activation)
        self.se: SqueezeExcitation | None = None
        if se_ratio > 0:
            hidden = se_hidden if se_hidden is not None else efficientnet_se_hidden(c_in, se_ratio)
            self.se = SqueezeExcitation(mid, hidden, se_activation or activation, gate)
        self.conv_pwl = nn.Conv2d(mid, c_out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(c_out)

    def forward(self, x: Tensor) -> Tensor:
        if self.conv_pw is not None and self.bn1 is not None and self.act1 is not None:
            x = self.act1(self.bn1(self.conv_pw(x)))
        x = self.act2(self.bn2(self.conv_dw(x)))
        if self.se is not None:
            x = self.se(x)
        return self.bn3(self.conv_pwl(x))


class IRF(nn.Module):
    """FBNetV3's inverted-residual block (mobile-vision ``ir_k{k}[_sehsig]_hs``): 1x1 expansion (none when
    ``expansion`` is 1) -> BN -> hard swish -> k x k depthwise (stride) -> BN -> hard swish -> [SE: the block's
    activation inside, hard-sigmoid gate, ``make_divisible(mid * se_ratio / expansion)`` channels: mobile-vision's
    ``less_se_channels``] -> 1x1 projection -> BN, plus ``x`` when the
    stride is 1 and the width is kept; the last BN's gamma then starts at zero, so the block starts as the identity.
    ``padding`` overrides the depthwise conv's ``k // 2`` (FBNetV3-A pads two of its stride-2 blocks differently).
    Module names: ``body`` (an :class:`MBConv`); ``has_residual`` says whether ``x`` is added.
    """

    def __init__(
        self,
        c_in: int,
        c_out: int,
        kernel_size: int,
        stride: int = 1,
        expansion: float = 1.0,
        se: bool = False,
        activation: str = "hswish",
        se_ratio: float = 0.25,
        padding: int | None = None,
    ) -> None:
        super().__init__()
        mid = make_divisible(c_in * expansion) if expansion != 1 else c_in
        self.has_residual = stride == 1 and c_in == c_out
        self.body = MBConv(
            c_in,
            c_out,
            kernel_size,
            stride,
            expansion,
            se_ratio if se else 0.0,
            activation,
            se_hidden=make_divisible(int(mid * se_ratio / expansion)),
            gate="hsigmoid",
            skip_unit_expansion=True,
            padding=padding,
        )
        if self.has_residual:
            nn.init.zeros_(self.body.bn3.weight)

    def forward(self, x: Tensor) -> Tensor:
        y = self.body(x)
        return y + x if self.has_residual else y


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
