"""Attention blocks over feature maps: multi-head self-attention across the H x W positions, and squeeze-excitation.

The positional signal of :class:`SelfAttention2d` is a conditional positional encoding (Chu et al., "Conditional
Positional Encodings for Vision Transformers", 2021): a depthwise 3x3 conv added to the input before attention.
It is translation-equivariant and works at any resolution, which a cell op needs (the same op runs at 32 px and
at 331 px, and at every stage of the network).
"""

import math

from torch import Tensor, nn
from torch.nn import functional as F

from nas.ops.conv import ReLUConvBN, batch_norm


def _largest_divisor_at_most(n: int, limit: int) -> int:
    for d in range(max(1, min(n, limit)), 0, -1):
        if n % d == 0:
            return d
    return 1


class SelfAttention2d(nn.Module):
    """Multi-head self-attention over the H*W tokens of a feature map, as a cell op (c_in -> c_out, stride).

    Structure: [ReLU -> 1x1 conv (stride) -> BN when the stride is 2 or the channels change] -> x + dwconv3x3(x)
    (positional encoding) -> LayerNorm over channels -> multi-head scaled dot-product attention -> linear
    projection -> BN. No residual inside: the cell adds the op's output to its other branch. ``heads`` is reduced
    to the largest divisor of ``c_out`` not above it.
    """

    def __init__(
        self,
        c_in: int,
        c_out: int,
        stride: int = 1,
        heads: int = 2,
        bn_eps: float = 1e-5,
        bn_momentum: float = 0.1,
    ) -> None:
        super().__init__()
        self.heads = _largest_divisor_at_most(c_out, heads)
        self.proj_in: nn.Module | None = None
        if stride != 1 or c_in != c_out:
            self.proj_in = ReLUConvBN(c_in, c_out, 1, stride, bn_eps=bn_eps, bn_momentum=bn_momentum)
        self.pos = nn.Conv2d(c_out, c_out, 3, padding=1, groups=c_out, bias=True)
        self.norm = nn.LayerNorm(c_out)
        self.qkv = nn.Linear(c_out, 3 * c_out, bias=True)
        self.proj = nn.Linear(c_out, c_out, bias=True)
        self.bn = batch_norm(c_out, bn_eps, bn_momentum)

    def forward(self, x: Tensor) -> Tensor:
        if self.proj_in is not None:
            x = self.proj_in(x)
        x = x + self.pos(x)
        n, c, h, w = x.shape
        tokens = self.norm(x.flatten(2).transpose(1, 2))  # (N, HW, C)
        qkv = self.qkv(tokens).reshape(n, h * w, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])  # (N, heads, HW, C/heads)
        out = self.proj(out.transpose(1, 2).reshape(n, h * w, c))
        return self.bn(out.transpose(1, 2).reshape(n, c, h, w))


class SqueezeExcite(nn.Module):
    """Squeeze-and-excitation: channel gates from global average pooling, reduce -> ReLU -> expand -> sigmoid."""

    def __init__(self, channels: int, reduction: float = 0.25, min_channels: int = 8) -> None:
        super().__init__()
        hidden = max(min_channels, math.ceil(channels * reduction))
        self.reduce = nn.Conv2d(channels, hidden, 1, bias=True)
        self.expand = nn.Conv2d(hidden, channels, 1, bias=True)

    def forward(self, x: Tensor) -> Tensor:
        s = x.mean((2, 3), keepdim=True)
        return x * self.expand(F.relu(self.reduce(s))).sigmoid()


class TransformerBlock2d(nn.Module):
    """A transformer block over a feature map, width and resolution kept: ``x + attn(x)`` with
    :class:`SelfAttention2d` (depthwise-conv positional signal, LayerNorm, multi-head attention, projection, BN), then
    ``x + mlp(x)`` with the MLP a 1x1 conv to ``mlp_ratio * channels`` -> BN -> hard swish -> 1x1 conv -> BN. Both
    last BN gammas start at zero, so the block starts as the identity (as an IRF block with a residual does)."""

    def __init__(self, channels: int, heads: int = 4, mlp_ratio: float = 2.0) -> None:
        super().__init__()
        hidden = max(1, int(channels * mlp_ratio))
        self.attn = SelfAttention2d(channels, channels, 1, heads)
        last = nn.BatchNorm2d(channels)
        self.mlp = nn.Sequential(
            nn.Conv2d(channels, hidden, 1, bias=False),
            nn.BatchNorm2d(hidden),
            nn.Hardswish(),
            nn.Conv2d(hidden, channels, 1, bias=False),
            last,
        )
        nn.init.zeros_(self.attn.bn.weight)
        nn.init.zeros_(last.weight)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(x)
        return x + self.mlp(x)
