"""The op factory of the NASNet cell space: ``OPS[name](c_in, c_out, stride, cfg) -> nn.Module``.

Every op maps (N, c_in, H, W) to (N, c_out, ceil(H / stride), ceil(W / stride)).
"""

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from nas.ops.attention import SelfAttention2d
from nas.ops.conv import FactorizedReduce, Pool, ReLUConvBN, SepConv, StackedSepConv, StripConv, Zero


@dataclass(frozen=True)
class OpConfig:
    """Settings shared by all ops of a network.

    ``identity_reduction``: what ``skip_connect`` becomes when it has to change the stride or the channels:
    "conv" = ReLU -> 1x1 conv(stride) -> BN (TF NASNet), "factorized" = FactorizedReduce (DARTS; a stride-1
    channel change still uses the 1x1 conv).
    """

    bn_eps: float = 1e-3
    bn_momentum: float = 0.1
    identity_reduction: str = "conv"
    attention_heads: int = 2


OpFactory = Callable[[int, int, int, OpConfig], nn.Module]


def _skip(c_in: int, c_out: int, stride: int, cfg: OpConfig) -> nn.Module:
    if stride == 1 and c_in == c_out:
        return nn.Identity()
    if stride == 2 and cfg.identity_reduction == "factorized":
        return FactorizedReduce(c_in, c_out, True, cfg.bn_eps, cfg.bn_momentum)
    return ReLUConvBN(c_in, c_out, 1, stride, bn_eps=cfg.bn_eps, bn_momentum=cfg.bn_momentum)


def _conv(k: int) -> OpFactory:
    def make(c_in: int, c_out: int, stride: int, cfg: OpConfig) -> nn.Module:
        return ReLUConvBN(c_in, c_out, k, stride, bn_eps=cfg.bn_eps, bn_momentum=cfg.bn_momentum)

    return make


def _strip(k: int) -> OpFactory:
    def make(c_in: int, c_out: int, stride: int, cfg: OpConfig) -> nn.Module:
        return StripConv(c_in, c_out, k, stride, cfg.bn_eps, cfg.bn_momentum)

    return make


def _sep(k: int) -> OpFactory:
    def make(c_in: int, c_out: int, stride: int, cfg: OpConfig) -> nn.Module:
        return StackedSepConv(c_in, c_out, k, stride, cfg.bn_eps, cfg.bn_momentum)

    return make


def _dil(k: int) -> OpFactory:
    def make(c_in: int, c_out: int, stride: int, cfg: OpConfig) -> nn.Module:
        return SepConv(c_in, c_out, k, stride, 2, cfg.bn_eps, cfg.bn_momentum)

    return make


def _none(c_in: int, c_out: int, stride: int, cfg: OpConfig) -> nn.Module:
    """DARTS's "none": zeros of the output shape (every ``stride``-th position of the input, so ceil(H / stride))."""
    return Zero(c_out, stride)


def _pool(kind: str, k: int) -> OpFactory:
    def make(c_in: int, c_out: int, stride: int, cfg: OpConfig) -> nn.Module:
        return Pool(kind, c_in, c_out, k, stride, cfg.bn_eps, cfg.bn_momentum)

    return make


def _attention(c_in: int, c_out: int, stride: int, cfg: OpConfig) -> nn.Module:
    return SelfAttention2d(c_in, c_out, stride, cfg.attention_heads, cfg.bn_eps, cfg.bn_momentum)


OPS: dict[str, OpFactory] = {
    "skip_connect": _skip,
    "conv_3x1_1x3": _strip(3),
    "conv_7x1_1x7": _strip(7),
    "dil_conv_3x3": _dil(3),
    "dil_conv_5x5": _dil(5),
    "avg_pool_3x3": _pool("avg", 3),
    "max_pool_3x3": _pool("max", 3),
    "max_pool_5x5": _pool("max", 5),
    "max_pool_7x7": _pool("max", 7),
    "conv_1x1": _conv(1),
    "conv_3x3": _conv(3),
    "sep_conv_3x3": _sep(3),
    "sep_conv_5x5": _sep(5),
    "sep_conv_7x7": _sep(7),
    "self_attention": _attention,
    "none": _none,
}


def make_op(name: str, c_in: int, c_out: int, stride: int, cfg: OpConfig) -> nn.Module:
    """Build op ``name``; raises KeyError listing the known ops for an unknown name."""
    if name not in OPS:
        raise KeyError(f"unknown op {name!r}; known: {', '.join(OPS)}")
    return OPS[name](c_in, c_out, stride, cfg)
