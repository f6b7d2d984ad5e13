"""The NASNet cell search space (normal + reduction cell of 5 blocks), its networks, presets and supernet."""

from searchspaces.nasnet.space import NASNetMacro, NASNetOptions, NASNetSpace

__all__ = ["NASNetMacro", "NASNetOptions", "NASNetSpace"]
