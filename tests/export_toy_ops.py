"""Building blocks of the export test space (torch-only: exported verbatim into a standalone model.py)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn


@dataclass(frozen=True)
class LayerCfg:
    width: int
    kernel: int
    stride: int


class ConvBNAct(nn.Module):
    def __init__(self, c_in: int, cfg: LayerCfg) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, cfg.width, cfg.kernel, cfg.stride, cfg.kernel // 2, bias=False)
        self.bn = nn.BatchNorm2d(cfg.width)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.bn(self.conv(x)))
