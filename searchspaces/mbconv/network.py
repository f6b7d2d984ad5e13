"""Standalone networks of BossNAS's MBConv space (the ranking-study space; spec section 5).

stem: 3x3 conv (stride ``stem_stride``) 3 -> 32 + BN + SiLU -> MB1 (depthwise-separable 3x3, SE 0.25) 32 -> 16 ->
5 searched stages [width, stride, layers] = [24,2,2] [40,2,4] [80,2,4] [112,1,4] [192,2,4], each layer one of
MB6/MB3 x 3x3/5x5 (SE 0.25, SiLU) plus a residual (identity, or 2x2 avg pool when the stride is 2 and 1x1 conv + BN
when the width changes) -> the fixed [320,1,1] layer (MB6 3x3, same residual rule) -> [1x1 conv to
``head_channels`` + BN + SiLU] -> global average pool -> dropout -> linear. Widths are scaled by ``width_mult``
(rounded to multiples of 8, EfficientNet rule). Imports only torch and nas.ops (standalone export).
"""

import math
from typing import Any

from torch import Tensor, nn

from nas.ops.mbconv import DepthwiseSeparable, MBConv, ResidualShortcut, make_divisible
from nas.ops.se import activation_layer
from searchspaces.mbconv.encoding import (
    MBCONV_FIRST_WIDTH,
    MBCONV_OPS,
    MBCONV_STAGES,
    MBCONV_STEM_WIDTH,
    MBCONV_TAIL,
    MBCONV_TAIL_OP,
)

MBCONV_MACRO_DEFAULTS: dict[str, Any] = {
    "num_classes": 10,
    "in_channels": 3,
    "stem_stride": 2,
    "width_mult": 1.0,
    "head_channels": 1280,
    "dropout": 0.0,
    "image_size": 224,
}


def fill_mbconv_macro(macro: dict[str, Any] | None) -> dict[str, Any]:
    out = dict(MBCONV_MACRO_DEFAULTS)
    out.update({k: v for k, v in (macro or {}).items() if v is not None})
    return out


def scaled_width(width: int, mult: float) -> int:
    return width if mult == 1.0 else make_divisible(width * mult, 8)


def mbconv_layer_plan(macro: dict[str, Any]) -> list[list[tuple[int, int, int]]]:
    """(c_in, c_out, stride) of every searched layer, grouped by stage (block)."""
    mult = float(macro["width_mult"])
    c_in = scaled_width(MBCONV_FIRST_WIDTH, mult)
    plan: list[list[tuple[int, int, int]]] = []
    for width, stride, layers in MBCONV_STAGES:
        c_out = scaled_width(width, mult)
        stage = []
        for j in range(layers):
            stage.append((c_in, c_out, stride if j == 0 else 1))
            c_in = c_out
        plan.append(stage)
    return plan


def mbconv_sizes(macro: dict[str, Any]) -> list[int]:
    """Spatial side after the stem and after each searched stage, for the macro's ``image_size``."""
    size = math.ceil(int(macro["image_size"]) / int(macro["stem_stride"]))
    sizes = [size]
    for _, stride, _ in MBCONV_STAGES:
        size = math.ceil(size / stride)
        sizes.append(size)
    return sizes


def make_mbconv_op(op: int, c_in: int, c_out: int, stride: int) -> MBConv:
    expansion, kernel = MBCONV_OPS[op]
    return MBConv(c_in, c_out, kernel, stride, expansion, 0.25, "silu")


class MBLayer(nn.Module):
    """One residual layer: ``op(x) + shortcut(x)``."""

    def __init__(self, op: int, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.op = make_mbconv_op(op, c_in, c_out, stride)
        self.shortcut = ResidualShortcut(c_in, c_out, stride)

    def forward(self, x: Tensor) -> Tensor:
        return self.op(x) + self.shortcut(x)


def build_mbconv_stem(macro: dict[str, Any]) -> nn.Sequential:
    """3x3 conv (stem stride) + BN + SiLU, then the MB1 block to 16 (scaled) channels."""
    mult = float(macro["width_mult"])
    c_stem, c_first = scaled_width(MBCONV_STEM_WIDTH, mult), scaled_width(MBCONV_FIRST_WIDTH, mult)
    return nn.Sequential(
        nn.Conv2d(int(macro["in_channels"]), c_stem, 3, int(macro["stem_stride"]), 1, bias=False),
        nn.BatchNorm2d(c_stem),
        activation_layer("silu"),
        DepthwiseSeparable(c_stem, c_first, 3, 1, 0.25, "silu"),
    )


class MBConvHead(nn.Module):
    """The fixed [320,1,1] layer, the optional 1x1 conv head, global average pool, dropout and the classifier."""

    def __init__(self, macro: dict[str, Any]) -> None:
        super().__init__()
        mult = float(macro["width_mult"])
        c_in = scaled_width(MBCONV_STAGES[-1][0], mult)
        c_tail = scaled_width(MBCONV_TAIL[0], mult)
        self.tail = MBLayer(MBCONV_TAIL_OP, c_in, c_tail, MBCONV_TAIL[1])
        head = int(macro["head_channels"])
        self.conv: nn.Module = nn.Identity()
        if head > 0:
            self.conv = nn.Sequential(
                nn.Conv2d(c_tail, head, 1, bias=False), nn.BatchNorm2d(head), activation_layer("silu")
            )
        self.dropout = nn.Dropout(float(macro["dropout"]))
        self.classifier = nn.Linear(head if head > 0 else c_tail, int(macro["num_classes"]))

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv(self.tail(x))
        return self.classifier(self.dropout(x.mean((2, 3))))


class MBConvNetwork(nn.Module):
    """stem -> searched layers -> head. Module names: ``stem``, ``layers.{i}.{op,shortcut}``, ``head``."""

    def __init__(self, choices: dict[str, Any], macro: dict[str, Any]) -> None:
        super().__init__()
        m = fill_mbconv_macro(macro)
        self.macro = m
        self.stem = build_mbconv_stem(m)
        ops = [int(o) for block in choices["blocks"] for o in block]
        specs = [spec for stage in mbconv_layer_plan(m) for spec in stage]
        if len(ops) != len(specs):
            raise ValueError(f"expected {len(specs)} ops, got {len(ops)}")
        self.layers = nn.ModuleList([MBLayer(op, *spec) for op, spec in zip(ops, specs, strict=True)])
        self.head = MBConvHead(m)

    def forward(self, x: Tensor) -> Tensor:
        x = self.stem(x)
        for layer in self.layers:
            x = layer(x)
        return self.head(x)


def build_network(choices: dict[str, Any], macro: dict[str, Any]) -> MBConvNetwork:
    """The standalone network for ``choices`` (``{"blocks": [[op] * layers] * 5}``) and a macro dict."""
    return MBConvNetwork(choices, macro)
