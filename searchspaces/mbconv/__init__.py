"""BossNAS's MBConv search space (its ranking-study space) with a single-path, block-wise supernet."""

from searchspaces.mbconv.space import MBConvMacro, MBConvSpace

__all__ = ["MBConvMacro", "MBConvSpace"]
