"""Convolutional building blocks in the NASNet/DARTS style: every conv is ReLU -> conv -> BN, convs have no bias.

Padding is symmetric (``dilation * (k - 1) // 2``). For odd kernels and stride 2 this gives TensorFlow "SAME"'s
output size ``ceil(H / 2)`` at every input size, so shapes match the TF reference networks.
"""

import torch
from torch import Tensor, nn
from torch.nn import functional as F


def batch_norm(channels: int, eps: float = 1e-5, momentum: float = 0.1) -> nn.BatchNorm2d:
    """An affine BatchNorm2d with the given epsilon and (PyTorch-convention) momentum."""
    return nn.BatchNorm2d(channels, eps=eps, momentum=momentum)


class ReLUConvBN(nn.Module):
    """[ReLU] -> conv(k, stride) -> BN. ``relu=False`` drops the leading ReLU (TF's stride-1 "path_conv")."""

    def __init__(
        self,
        c_in: int,
        c_out: int,
        kernel_size: int = 1,
        stride: int = 1,
        dilation: int = 1,
        relu: bool = True,
        bn_eps: float = 1e-5,
        bn_momentum: float = 0.1,
    ) -> None:
        super().__init__()
        self.relu = relu
        pad = dilation * (kernel_size - 1) // 2
        self.conv = nn.Conv2d(c_in, c_out, kernel_size, stride, pad, dilation=dilation, bias=False)
        self.bn = batch_norm(c_out, bn_eps, bn_momentum)

    def forward(self, x: Tensor) -> Tensor:
        if self.relu:
            x = F.relu(x)
        return self.bn(self.conv(x))

    def forward_sliced(self, x: Tensor, index: Tensor) -> Tensor:
        """Forward on a subset of the input channels: ``x`` holds the channels ``index`` of the full input."""
        if self.relu:
            x = F.relu(x)
        c = self.conv
        w = c.weight.index_select(1, index)
        return self.bn(F.conv2d(x, w, None, c.stride, c.padding, c.dilation))


class FactorizedReduce(nn.Module):
    """Stride-2 reduction without information loss: two 1x1 convs on pixel grids offset by one, concatenated.

    Path 1 samples even pixels; path 2 shifts the input by one pixel (pad right/bottom, crop top/left) first, as in
    the TF NASNet code, so odd sizes work (both paths give ``ceil(H / 2)``). An odd ``c_out`` gives path 2 the
    extra channel (TF). ``relu=True`` puts a ReLU in front (DARTS; TF's ``_reduce_prev_layer``).
    """

    def __init__(
        self, c_in: int, c_out: int, relu: bool = True, bn_eps: float = 1e-5, bn_momentum: float = 0.1
    ) -> None:
        super().__init__()
        if c_out < 2:
            raise ValueError(f"FactorizedReduce needs at least 2 output channels, got {c_out}")
        self.relu = relu
        self.conv1 = nn.Conv2d(c_in, c_out // 2, 1, stride=2, bias=False)
        self.conv2 = nn.Conv2d(c_in, c_out - c_out // 2, 1, stride=2, bias=False)
        self.bn = batch_norm(c_out, bn_eps, bn_momentum)

    @staticmethod
    def _shift(x: Tensor) -> Tensor:
        return F.pad(x[:, :, 1:, 1:], (0, 1, 0, 1))

    def forward(self, x: Tensor) -> Tensor:
        if self.relu:
            x = F.relu(x)
        return self.bn(torch.cat([self.conv1(x), self.conv2(self._shift(x))], dim=1))

    def forward_sliced(self, x: Tensor, index: Tensor) -> Tensor:
        """Forward on a subset of the input channels (see :meth:`ReLUConvBN.forward_sliced`)."""
        if self.relu:
            x = F.relu(x)
        w1 = self.conv1.weight.index_select(1, index)
        w2 = self.conv2.weight.index_select(1, index)
        return self.bn(torch.cat([F.conv2d(x, w1, stride=2), F.conv2d(self._shift(x), w2, stride=2)], dim=1))


class SepConv(nn.Sequential):
    """One depthwise-separable conv: ReLU -> depthwise k x k (stride, dilation) -> pointwise 1x1 -> BN.

    No BN or ReLU between the depthwise and the pointwise conv (TF ``separable_conv2d``). With ``dilation=2`` and
    k=3 this is DARTS's ``dil_conv_3x3``.
    """

    def __init__(
        self,
        c_in: int,
        c_out: int,
        kernel_size: int,
        stride: int = 1,
        dilation: int = 1,
        bn_eps: float = 1e-5,
        bn_momentum: float = 0.1,
    ) -> None:
        pad = dilation * (kernel_size - 1) // 2
        super().__init__(
            nn.ReLU(),
            nn.Conv2d(c_in, c_in, kernel_size, stride, pad, dilation=dilation, groups=c_in, bias=False),
            nn.Conv2d(c_in, c_out, 1, bias=False),
            batch_norm(c_out, bn_eps, bn_momentum),
        )


DilConv = SepConv


class StackedSepConv(nn.Sequential):
    """The NASNet separable op: the separable conv applied twice, [ReLU, sep(k, stride), BN] then
    [ReLU, sep(k, 1), BN], both with ``c_out`` outputs."""

    def __init__(
        self, c_in: int, c_out: int, kernel_size: int, stride: int = 1, bn_eps: float = 1e-5, bn_momentum: float = 0.1
    ) -> None:
        super().__init__(
            SepConv(c_in, c_out, kernel_size, stride, 1, bn_eps, bn_momentum),
            SepConv(c_out, c_out, kernel_size, 1, 1, bn_eps, bn_momentum),
        )


class StripConv(nn.Sequential):
    """``1xk then kx1``: ReLU -> conv(1, k) stride (1, s) -> conv(k, 1) stride (s, 1) -> BN.

    One BN, no ReLU between the two convs.
    """

    def __init__(
        self, c_in: int, c_out: int, kernel_size: int, stride: int = 1, bn_eps: float = 1e-5, bn_momentum: float = 0.1
    ) -> None:
        k = kernel_size
        super().__init__(
            nn.ReLU(),
            nn.Conv2d(c_in, c_out, (1, k), (1, stride), (0, k // 2), bias=False),
            nn.Conv2d(c_out, c_out, (k, 1), (stride, 1), (k // 2, 0), bias=False),
            batch_norm(c_out, bn_eps, bn_momentum),
        )


class Pool(nn.Sequential):
    """k x k max or average pool (average excludes padding), followed by 1x1 conv + BN when channels change.

    No ReLU (TF NASNet ``_pooling``).
    """

    def __init__(
        self,
        kind: str,
        c_in: int,
        c_out: int,
        kernel_size: int,
        stride: int = 1,
        bn_eps: float = 1e-5,
        bn_momentum: float = 0.1,
    ) -> None:
        pad = kernel_size // 2
        layers: list[nn.Module]
        if kind == "max":
            layers = [nn.MaxPool2d(kernel_size, stride, pad)]
        elif kind == "avg":
            layers = [nn.AvgPool2d(kernel_size, stride, pad, count_include_pad=False)]
        else:
            raise ValueError(f"unknown pool kind {kind!r}; allowed: max, avg")
        if c_in != c_out:
            layers += [nn.Conv2d(c_in, c_out, 1, bias=False), batch_norm(c_out, bn_eps, bn_momentum)]
        super().__init__(*layers)


class Zero(nn.Module):
    """The "none" op of differentiable search: zeros of the output shape (stride 2 halves the size)."""

    def __init__(self, c_out: int, stride: int = 1) -> None:
        super().__init__()
        self.c_out = c_out
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        if self.stride > 1:
            x = x[:, :, :: self.stride, :: self.stride]
        if x.shape[1] != self.c_out:
            return x.new_zeros((x.shape[0], self.c_out, *x.shape[2:]))
        return x.mul(0.0)
