"""FBNetV5's multi-task topology space: an HRNet-like supernet extended from FBNetV3-A, searched as binary masks."""

from searchspaces.fbnetv5.space import FBNetV5Macro, FBNetV5Options, FBNetV5Space

__all__ = ["FBNetV5Macro", "FBNetV5Options", "FBNetV5Space"]
