"""Presets of the FBNetV5 space: ``fbnetv3-a``, the architecture whose network is exactly FBNetV3-A."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from nas.arch import Architecture
from nas.space import Preset
from searchspaces.fbnetv5.encoding import fusion_edges

if TYPE_CHECKING:
    from searchspaces.fbnetv5.space import FBNetV5Space

REFERENCE = (
    "Dai et al. FBNetV3: Joint Architecture-Recipe Search using Predictor Pretraining. CVPR 2021 (FBNetV3-A: "
    "357M FLOPs, 8.6M params, 79.1% top-1); block definition: facebookresearch/mobile-vision, "
    "fbnet_modeldef_cls_fbnetv3.py (FBNetV3_A)"
)
PUBLISHED = {"fbnetv3-a": {"params": 8.6e6, "macs": 357e6}}
"""The published costs of each preset at its input size (the FBNetV3 paper's table; one FLOP = one MAC there)."""

FBNETV3_A_MACRO: dict[str, Any] = {
    "num_classes": 1000,
    "tasks": ["classification"],
    "cls_paths": [3],
    "native_padding": True,
    "stem_stride": 2,
    "width_mult": 1.0,
    "head_channels": 1984,
    "head_expansion": 6.0,
    "dropout": 0.2,
}


def fbnetv3_a_choices(space: FBNetV5Space) -> dict[str, Any]:
    """Keep every block of FBNetV3-A (a path's blocks in its own stage), skip the other blocks, drop every fusion
    edge: the H/4 -> H/8 -> H/16 -> H/32 main path alone, with the classification head on H/32."""
    return {
        "blocks": [[[1 if s == p else 0] * n for p, n in enumerate(row)] for s, row in enumerate(space.shape())],
        "fusion": [[0] * len(fusion_edges(b)) for b in range(space.opts.stages - 1)],
    }


def fbnetv5_presets(space: FBNetV5Space) -> dict[str, Preset]:
    """The presets this configuration of the space can express: FBNetV3-A needs FBNetV3-A's depths
    (``depth_mult`` 1) and droppable fusion edges (``search_fusion``)."""
    if space.opts.depth_mult != 1.0 or not space.opts.search_fusion:
        return {}
    arch = Architecture(space=space.name, version=space.version, choices=fbnetv3_a_choices(space))
    return {
        "fbnetv3-a": Preset(
            name="fbnetv3-a",
            arch=arch,
            macro=dict(FBNETV3_A_MACRO),
            input_size=224,
            description="FBNetV3-A on ImageNet: the main path of the supernet alone, classification head on H/32 "
            "(published 357M MACs, 8.6M params, 79.1% top-1)",
            reference=REFERENCE,
        )
    }
