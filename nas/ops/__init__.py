"""Building blocks shared by the search spaces: conv-BN-ReLU units, separable and factorized convolutions,
factorized reduction, pools, drop path, self-attention over feature maps and squeeze-excitation.

The modules here import only ``torch`` (and each other), so a space can list them in ``standalone_modules()``.
"""

from nas.ops.attention import SelfAttention2d, SqueezeExcite
from nas.ops.conv import (
    DilConv,
    FactorizedReduce,
    Pool,
    ReLUConvBN,
    SepConv,
    StackedSepConv,
    StripConv,
    Zero,
    batch_norm,
)
from nas.ops.drop import ScheduledDropPath, drop_path, scheduled_keep_prob

__all__ = [
    "DilConv",
    "FactorizedReduce",
    "Pool",
    "ReLUConvBN",
    "ScheduledDropPath",
    "SelfAttention2d",
    "SepConv",
    "SqueezeExcite",
    "StackedSepConv",
    "StripConv",
    "Zero",
    "batch_norm",
    "drop_path",
    "scheduled_keep_prob",
]
