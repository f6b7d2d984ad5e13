"""The network of the export test space; with export_toy_ops it defines ``build_network(choices, macro)``."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from tests.export_toy_ops import ConvBNAct, LayerCfg


class ToyExportNet(nn.Module):
    def __init__(self, choices: dict[str, Any], macro: dict[str, Any]) -> None:
        super().__init__()
        c = int(macro["stem"])
        self.stem = ConvBNAct(int(macro["in_channels"]), LayerCfg(c, 3, 1))
        layers = []
        for i, (width, kernel) in enumerate(zip(choices["widths"], choices["kernels"], strict=True)):
            layers.append(ConvBNAct(c, LayerCfg(int(width), int(kernel), 2 if i == 1 else 1)))
            c = int(width)
        self.layers = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(c, int(macro["num_classes"]))

    def forward(self, x: Tensor) -> Tensor:
        x = self.layers(self.stem(x))
        return self.head(self.pool(x).flatten(1))


def build_network(choices: dict[str, Any], macro: dict[str, Any]) -> nn.Module:
    return ToyExportNet(choices, macro)
