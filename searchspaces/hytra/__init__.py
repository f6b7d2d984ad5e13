"""BossNAS's HyTra hybrid CNN-Transformer search space: its networks, presets and supernet (see docs/hytra.md)."""

from searchspaces.hytra.space import HyTraMacro, HyTraSpace

__all__ = ["HyTraMacro", "HyTraSpace"]
