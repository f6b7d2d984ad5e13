"""Published architectures of the NASNet cell space with the macro settings they were published with."""

from __future__ import annotations

from typing import TYPE_CHECKING

from nas.arch import Architecture
from nas.space import Preset
from searchspaces.nasnet.genotype import darts_v2, nasnet_a, pnasnet_5

if TYPE_CHECKING:
    from searchspaces.nasnet.space import NASNetSpace

ZOPH = (
    "Zoph, Vasudevan, Shlens, Le. Learning Transferable Architectures for Scalable Image Recognition. CVPR 2018; "
    "tensorflow/models research/slim/nets/nasnet/nasnet.py"
)
PNAS = (
    "Liu et al. Progressive Neural Architecture Search. ECCV 2018; "
    "tensorflow/models research/slim/nets/nasnet/pnasnet.py (large_imagenet_config)"
)
DARTS = "Liu, Simonyan, Yang. DARTS: Differentiable Architecture Search. ICLR 2019; quark0/darts (genotypes.DARTS_V2)"


def nasnet_presets(space: NASNetSpace) -> dict[str, Preset]:
    def arch(choices: dict) -> Architecture:  # type: ignore[type-arg]
        return Architecture(space=space.name, version=space.version, choices=choices)

    presets = [
        Preset(
            name="nasnet-a-cifar",
            arch=arch(nasnet_a()),
            macro={
                "kind": "nasnet", "stem": "cifar", "cells_per_stack": 6, "filters": 32, "stem_multiplier": 3.0,
                "drop_path_keep": 0.6, "dropout": 0.0, "aux_head": True, "num_classes": 10, "image_size": 32,
                "bn_eps": 1e-3,
            },
            input_size=32,
            description="NASNet-A 6 @ 768 on CIFAR-10 (published 3.3M params, 2.65% error)",
            reference=ZOPH,
        ),
        Preset(
            name="nasnet-a-mobile",
            arch=arch(nasnet_a()),
            macro={
                "kind": "nasnet", "stem": "imagenet", "cells_per_stack": 4, "filters": 44, "stem_multiplier": 1.0,
                "drop_path_keep": 1.0, "dropout": 0.5, "aux_head": True, "num_classes": 1000, "image_size": 224,
                "bn_eps": 1e-3,
            },
            input_size=224,
            description="NASNet-A 4 @ 1056 (Mobile) on ImageNet (published 5.3M params, 564M mult-adds)",
            reference=ZOPH,
        ),
        Preset(
            name="nasnet-a-large",
            arch=arch(nasnet_a()),
            macro={
                "kind": "nasnet", "stem": "imagenet", "cells_per_stack": 6, "filters": 168, "stem_multiplier": 3.0,
                "skip_reduction_layer_input": True, "drop_path_keep": 0.7, "dropout": 0.5, "aux_head": True,
                "num_classes": 1000, "image_size": 331, "bn_eps": 1e-3,
            },
            input_size=331,
            description="NASNet-A 6 @ 4032 (Large) on ImageNet at 331 px (published 88.9M params, 23.8B mult-adds)",
            reference=ZOPH,
        ),
        Preset(
            name="pnasnet-5-large",
            arch=arch(pnasnet_5()),
            macro={
                "kind": "pnasnet", "stem": "imagenet", "cells_per_stack": 4, "filters": 216, "stem_multiplier": 3.0,
                "skip_reduction_layer_input": True, "drop_path_keep": 0.6, "dropout": 0.5, "aux_head": True,
                "num_classes": 1000, "image_size": 331, "bn_eps": 1e-3,
            },
            input_size=331,
            description="PNASNet-5 Large (N=4, F=216) on ImageNet at 331 px (published 86.1M params, 25.0B mult-adds)",
            reference=PNAS,
        ),
        Preset(
            name="darts-v2-cifar",
            arch=arch(darts_v2()),
            macro={
                "kind": "darts", "stem": "cifar", "layers": 20, "channels": 36, "stem_multiplier": 3.0,
                "drop_path_keep": 0.8, "dropout": 0.0, "aux_head": True, "num_classes": 10, "image_size": 32,
                "bn_eps": 1e-5,
            },
            input_size=32,
            description="DARTS (second order) cell, 20 cells, C=36 on CIFAR-10 (published 3.3M params, 2.76% error)",
            reference=DARTS,
        ),
    ]  # fmt: skip
    return {p.name: p for p in presets}
